"""Docker networks with `control = "etcd"`: no per-host slices, the store keeps addresses unique
across hosts (claims bound to each host's lease), peers come from the store's membership, a
`docker rm` releases an address at once and a dead host's addresses go with its lease."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from helpers import until
from tests.netns.test_docker import PORT, DockerLab, _iperf3, gate

LEASE_TTL = 2
pytestmark = pytest.mark.xdist_group("docker-etcd")   # one worker builds the module's labs, once


@pytest.fixture(scope="module", params=["c", "python"])
def elab(request: pytest.FixtureRequest) -> Iterator[DockerLab]:
    from vxlan_dp.lab import Lab

    gate(request.param, etcd=True)
    lab = Lab(2)
    try:
        lab.build()
        lab.add_etcd_host()
        for h in lab.hosts:
            lab.start_dockerd(h)
        for h in lab.hosts:
            lab.start_daemon(h, "", daemon_toml=lab.docker_toml(h, control="etcd", lease_ttl=LEASE_TTL),
                             backend=request.param)
        yield DockerLab(lab, request.param)
    finally:
        lab.close()


def _claims(dl: DockerLab) -> dict[str, dict[str, str]]:
    r = dl.lab.etcdctl("get", "--prefix", "/vxlan-dp-ipam/")
    lines = r.stdout.splitlines()
    return {lines[i].rsplit("/", 1)[1]: json.loads(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}


def test_store_allocates_unique_addresses_and_carries_traffic(elab: DockerLab) -> None:
    elab.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}")
    try:
        ips = {}
        for i in range(2):
            for k in range(3):
                ips[f"e{i + 1}-{k}"] = elab.run(i, f"e{i + 1}-{k}", "blue")
        assert len(set(ips.values())) == len(ips), ips
        claims = _claims(elab)
        assert set(claims) == set(ips.values())
        hosts = {c["host"] for c in claims.values()}
        assert hosts == {h.ip4 for h in elab.hosts}
        # peers from the store's membership: each host's flood list holds the other
        assert until(lambda: all(len(elab.lab.status(h)["networks"]["docker-42"]["peers"]) == 1
                                 for h in elab.hosts), 10)
        assert elab.ping(0, "e1-0", ips["e2-0"]) and elab.ping(1, "e2-1", ips["e1-2"])
        res = _iperf3(elab.netns_of(0, "e1-0"), elab.netns_of(1, "e2-0"), ips["e2-0"])
        assert "error" not in res, res.get("error")
        assert res["end"]["sum_received"]["bits_per_second"] > 10e6
        # docker rm releases the address in the store at once
        elab.d[0].check("rm", "-f", "e1-1")
        assert ips["e1-1"] not in _claims(elab)
        # a host that dies (SIGKILL: no goodbye) loses its claims when its lease expires
        elab.lab.stop_daemon(elab.hosts[1], signal.SIGKILL)
        assert until(lambda: not any(c["host"] == elab.hosts[1].ip4 for c in _claims(elab).values()),
                     LEASE_TTL * 3 + 5)
        # ... and claims them again when it comes back: its containers kept their addresses
        with open(elab.hosts[1].config_path) as f:
            toml = f.read()
        elab.lab.start_daemon(elab.hosts[1], "", daemon_toml=toml, backend=elab.backend)
        assert until(lambda: sum(c["host"] == elab.hosts[1].ip4 for c in _claims(elab).values()) == 3, 10)
        assert elab.ping(0, "e1-0", ips["e2-2"])
    finally:
        elab.remove("blue")
    assert _claims(elab) == {}


def test_encrypted_option_keys_from_the_store(elab: DockerLab) -> None:
    """`-o encrypted=true` with etcd control, created on both hosts at once: the store ends
    with one key (made by one host, the other waits for it through its watch), both members
    acknowledge it and the containers ping across ESP. One backend (C == Python: test_esp_fastpath)."""
    if elab.backend != "c":
        pytest.skip("the encrypted Docker network runs once, on the C backend")
    import threading

    made = [threading.Thread(target=elab.create, args=("sealed", "192.168.61.0/24", "vni=43", "port=4791",
                                                         "encrypted=true"), kwargs={"hosts": [i]}) for i in range(2)]
    for t in made:
        t.start()
    for t in made:
        t.join(60)
    try:
        keys = elab.lab.etcdctl("get", "--prefix", "--keys-only", "/vxlan-dp/keys/docker-43/").stdout.split()
        assert keys == ["/vxlan-dp/keys/docker-43/1"], keys
        a, b = elab.run(0, "x1", "sealed"), elab.run(1, "x2", "sealed")
        assert elab.ping(0, "x1", b) and elab.ping(1, "x2", a)
        for h in elab.hosts:
            assert elab.lab.status(h)["networks"]["docker-43"]["encryption"]["send_key"] == 1
            member = elab.lab.etcdctl("get", "--print-value-only", f"/vxlan-dp/members/docker-43/{h.ip4}").stdout
            assert json.loads(member)["keys"] == [1], member
    finally:
        elab.remove("sealed")


def test_a_network_created_on_one_host_appears_on_every_host() -> None:
    """[docker] api: `docker network create` once; the store carries it, every other host's
    vxlan-dp creates it in its own Docker (Docker SDK); `docker network rm` once removes it."""
    from vxlan_dp.lab import Lab

    gate("c", etcd=True)
    lab = Lab(3)
    try:
        lab.build()
        lab.add_etcd_host()
        for h in lab.hosts:
            d = lab.start_dockerd(h)
            lab.start_daemon(h, "", daemon_toml=lab.docker_toml(h, control="etcd", extra=f'api = "unix://{d.socket}"\n'),
                             backend="c")
        dl = DockerLab(lab, "c")
        dl.create("blue", "192.168.60.0/24", "vni=42", f"port={PORT}", hosts=[0])
        assert until(lambda: all(d.docker("network", "inspect", "blue").returncode == 0 for d in dl.d), 15), \
            [lab.log_tail(h, 5) for h in lab.hosts]
        for d in dl.d[1:]:
            net = d.inspect("network", "blue")
            assert net["Driver"] == "vxlan-dp" and net["IPAM"]["Driver"] == "vxlan-dp"
            assert net["IPAM"]["Config"][0]["Subnet"] == "192.168.60.0/24"
            assert net["Options"] == {"vni": "42", "port": str(PORT)}
        ips = [dl.run(i, f"s{i + 1}", "blue") for i in range(3)]
        assert len(set(ips)) == 3
        assert dl.ping(2, "s3", ips[0]) and dl.ping(0, "s1", ips[1])
        # rm once, where no container is left: gone everywhere it is unused
        for i in range(3):
            dl.d[i].check("rm", "-f", f"s{i + 1}")
        dl.d[1].check("network", "rm", "blue")
        assert until(lambda: all(d.docker("network", "inspect", "blue").returncode != 0 for d in dl.d), 15)
        assert lab.etcdctl("get", "--prefix", "--keys-only", "/vxlan-dp-docker/").stdout.strip() == ""
    finally:
        lab.close()
