"""A real dockerd per lab host, and a busybox image made on this machine.

Each lab host gets its own Docker, as a user's machine has one:

    mount namespace (persisted under <root>/mnt, private propagation)
      /run/docker/plugins  <- bind mount of <root>/plugins   (this host's plugin directory)
    network namespace: the lab host's
      dockerd --data-root --exec-root -H unix://<root>/docker.sock --pidfile ...
              --iptables=false --ip6tables=false --bridge=none --live-restore
        containerd (started and stopped by that dockerd, its own instance and namespace)

Why each piece:
- `nsenter --net=/run/netns/<host>`, not `ip netns exec`: the latter remounts /sys for the
  namespace, which hides the cgroup mounts dockerd needs ("Devices cgroup isn't mounted").
- /run/docker/plugins is one directory per machine, where Docker discovers plugins by socket
  name; the lab has several dockerds on one machine, and the plugin is called vxlan-dp on each
  of them (users type `-d vxlan-dp`). So each dockerd runs in a mount namespace of its own in
  which that directory is this host's `<root>/plugins`; the host's vxlan-dp daemon serves its
  socket there (`[docker] socket`).
- The mount namespace outlives any one dockerd (it is bound to a file, as `ip netns` binds
  network namespaces): with `--live-restore` a restarted dockerd must see the network
  namespace files its predecessor mounted under the exec root, or it drops the containers'
  endpoints while they run.
- No registry: the image is a rootfs holding Debian's busybox-static with its applet links,
  loaded with `docker import`.

Everything lives under `<root>` (a directory of the lab's workdir whose name contains
"vxlan_dp", so `lab clean` recognises the processes by their command line). `close()` removes
the containers, stops dockerd (which stops its containerd) by PID, kills any container shim of
ours that outlived it, unmounts the mount namespace and the directory it lives in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from typing import Any

from . import netns

__all__ = ["Dockerd", "DockerError", "IMAGE", "docker_binaries", "busybox_rootfs_tar", "shim_pids",
           "clean_dockerd"]

IMAGE = "vxdp-busybox:latest"
BUSYBOX = "/bin/busybox"          # Debian's busybox-static
PLUGIN_NAME = "vxlan-dp"


class DockerError(RuntimeError):
    pass


def docker_binaries() -> tuple[str, str]:
    """(dockerd, docker) from Debian's docker.io, or DockerError saying what is missing."""
    dockerd = shutil.which("dockerd") or ""
    # The Debian client first: the lab talks to Debian's daemon (another client on PATH may
    # be newer; API negotiation would cope, but one version pair is what the tests measured).
    client = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else (shutil.which("docker") or "")
    missing = [n for n, p in (("dockerd", dockerd), ("docker", client),
                              ("nsenter", shutil.which("nsenter")), ("unshare", shutil.which("unshare")))
               if not p]
    if missing:
        raise DockerError(f"{', '.join(missing)} not found (apt-get install docker.io)")
    if not os.access(BUSYBOX, os.X_OK):
        raise DockerError(f"{BUSYBOX} not found (apt-get install busybox-static)")
    return dockerd, client


def busybox_rootfs_tar(path: str) -> str:
    """A tar of a root file system: busybox-static and a symlink for each applet it lists."""
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True,
                             timeout=10).stdout.split()
    dirs: set[str] = set()
    with tarfile.open(path, "w") as tf:
        def mkdir(d: str) -> None:
            parts = d.split("/")
            for i in range(1, len(parts) + 1):
                p = "/".join(parts[:i])
                if p and p not in dirs:
                    dirs.add(p)
                    ti = tarfile.TarInfo(p)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if p == "tmp" else 0o755
                    tf.addfile(ti)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "tmp", "proc", "sys", "dev", "etc", "root"):
            mkdir(d)
        tf.add(BUSYBOX, "bin/busybox")
        for link in applets:
            if link == "bin/busybox":
                continue
            mkdir(os.path.dirname(link))
            ti = tarfile.TarInfo(link)
            ti.type, ti.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tf.addfile(ti)
    return path


def shim_pids(exec_root: str) -> list[int]:
    """PIDs of containerd shims serving a containerd under `exec_root` (ours by that path)."""
    out = []
    needle = exec_root.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and any(needle in a for a in argv):
            out.append(int(entry))
    return out


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


class Dockerd:
    """One lab host's Docker: its mount namespace, dockerd (and containerd), and a client."""

    def __init__(self, host_name: str, netns: str, root: str) -> None:
        self.dockerd_bin, self.docker_bin = docker_binaries()
        self.host_name, self.netns, self.root = host_name, netns, root
        self.data_root = os.path.join(root, "data")
        self.exec_root = os.path.join(root, "exec")
        self.plugins = os.path.join(root, "plugins")
        self.socket = os.path.join(root, "docker.sock")
        self.pidfile = os.path.join(root, "docker.pid")
        self.log_path = os.path.join(root, "dockerd.log")
        self.mnt_dir = os.path.join(root, "mnt")
        self.mntns = os.path.join(self.mnt_dir, "ns")
        self.proc: subprocess.Popen[Any] | None = None
        self.mounts: list[str] = []    # what close() unmounts, innermost first
        for d in (self.data_root, self.exec_root, self.plugins, self.mnt_dir, os.path.join(root, "client")):
            os.makedirs(d, exist_ok=True)

    @property
    def plugin_socket(self) -> str:
        """Where this host's vxlan-dp must serve the plugin for this dockerd to find it."""
        return os.path.join(self.plugins, f"{PLUGIN_NAME}.sock")

    # --- the mount namespace --------------------------------------------------------------
    def _make_mount_ns(self) -> None:
        if self.mntns in self.mounts:
            return
        # A mount namespace can only be bound to a file on a mount that does not propagate into
        # it (else the bind would loop): the directory becomes a private mount of its own first.
        for argv in (["mount", "--bind", self.mnt_dir, self.mnt_dir], ["mount", "--make-private", self.mnt_dir]):
            r = _run(argv)
            if r.returncode != 0:
                raise DockerError(f"{' '.join(argv)}: {r.stderr.strip()}")
            if argv[1] == "--bind":
                self.mounts.insert(0, self.mnt_dir)
        open(self.mntns, "w").close()
        os.makedirs("/run/docker/plugins", exist_ok=True)
        r = _run(["unshare", f"--mount={self.mntns}", "--propagation", "private", "--",
                  "mount", "--bind", self.plugins, "/run/docker/plugins"])
        if r.returncode != 0:
            raise DockerError(f"private mount namespace for {self.host_name}: {r.stderr.strip()}")
        self.mounts.insert(0, self.mntns)

    # --- dockerd --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> subprocess.Popen[Any]:
        """Start (or restart) dockerd in the host's namespaces; returns once it answers."""
        assert self.proc is None or self.proc.poll() is not None, "dockerd already running"
        self._make_mount_ns()
        argv = ["nsenter", f"--mount={self.mntns}", f"--net=/run/netns/{self.netns}", "--",
                self.dockerd_bin, "--data-root", self.data_root, "--exec-root", self.exec_root,
                "-H", f"unix://{self.socket}", "--pidfile", self.pidfile,
                "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false",
                "--live-restore", "--containerd-namespace", "vxdp", "--containerd-plugins-namespace",
                "vxdp-plugins", "--storage-driver", "overlay2"]
        with open(self.log_path, "ab") as log:
            start = log.tell()
            # nsenter execs dockerd (no --fork): the PID we hold is dockerd's
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerError(f"dockerd on {self.host_name} exited with {self.proc.returncode}:\n"
                                  f"{self.log_tail(start)}")
            if os.path.exists(self.socket) and self.docker("version", "--format", "{{.Server.Version}}",
                                                           timeout=5).returncode == 0:
                return self.proc
            time.sleep(0.1)
        raise DockerError(f"dockerd on {self.host_name} not ready after {timeout}s:\n{self.log_tail(start)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Stop dockerd by PID (it stops its containerd; with --live-restore containers keep running)."""
        p, self.proc = self.proc, None
        return None if p is None else netns.stop(p, sig, timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, offset: int = 0, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- the client -----------------------------------------------------------------------
    def docker(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this host's dockerd (Debian's client, its own config dir)."""
        env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}",
                   DOCKER_CONFIG=os.path.join(self.root, "client"))
        return subprocess.run([self.docker_bin, *args], capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)

    def check(self, *args: str, timeout: float = 60.0) -> str:
        """`docker ARGS`, raising DockerError with its message when it fails; stdout stripped."""
        r = self.docker(*args, timeout=timeout)
        if r.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} on {self.host_name}: {(r.stderr or r.stdout).strip()}")
        return r.stdout.strip()

    def load_image(self, tar_path: str) -> None:
        self.check("import", tar_path, IMAGE)

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.check(kind, "inspect", name))
        return data[0]

    def container_pid(self, name: str) -> int:
        return int(self.inspect("container", name)["State"]["Pid"])

    # --- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every container, stop dockerd, kill shims of ours that are left, unmount."""
        if self.running:
            try:
                ids = self.docker("ps", "-aq", timeout=20).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            self.stop()
        except OSError:
            pass
        clean_dockerd(None, self.exec_root, self.mounts)
        self.mounts.clear()


def clean_dockerd(pid: int | None, exec_root: str, mounts: list[str], timeout: float = 15.0) -> None:
    """What a lab's dockerd leaves when its lab is gone: stop dockerd (`pid`, if it still runs
    with our exec root in its command line), the container shims and the containerd serving
    under `exec_root`, then unmount `mounts`. Also the last step of `Dockerd.close()`."""
    if exec_root and pid and _is_ours(pid, exec_root):
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_ours(pid, exec_root) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_ours(pid, exec_root):
            _signal(pid, signal.SIGKILL)
    if exec_root:
        for shim in shim_pids(exec_root):  # containers left running by a live-restore stop:
            for child in _children(shim):   # their init (SIGKILL ends its PID namespace), then
                _signal(child, signal.SIGKILL)
            _signal(shim, signal.SIGKILL)   # the shim (its death alone leaves the container)
        try:
            with open(os.path.join(exec_root, "containerd", "containerd.pid")) as f:
                containerd = int(f.read().strip())
        except (OSError, ValueError):
            containerd = 0
        if containerd and _is_ours(containerd, exec_root):
            _signal(containerd, signal.SIGTERM)
    for m in mounts:
        umount(m)


def _children(pid: int) -> list[int]:
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _is_ours(pid: int, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return needle.encode() in f.read()
    except OSError:
        return False


def umount(path: str) -> None:
    """Detach a mount (lazily: a mount namespace file stays busy while processes hold it)."""
    _run(["umount", "-l", path], timeout=10)
