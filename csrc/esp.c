/*
 * esp.c: encrypted networks, ESP (RFC 4303) in UDP (RFC 3948), byte for byte what
 * vxlan_dp/wire/esp.py and vxlan_dp/core/keys.py define (wire format, SPI layout, HKDF inputs:
 * read the module docstrings there; the README states them for other implementations).
 *
 * Cryptography is OpenSSL's libcrypto only (EVP AES-256-GCM, ChaCha20-Poly1305, HKDF); no
 * primitive is written here.
 *
 * Per network (struct vxdp_esp, allocated by vxdp_esp_set, never per packet):
 * - the installed network keys, in an mmap'd page range marked MADV_DONTDUMP so a core dump
 *   leaves them out, zeroed (OPENSSL_cleanse) when a key is removed and when the network goes;
 * - the sender: one EVP context keyed with the per-start key of the send key id, and the
 *   64-bit sequence number, which only ever goes up for the life of the network (a key
 *   change keeps counting, so no (key, nonce) pair can come back within one start);
 * - the receivers: up to VXDP_ESP_SAS security associations keyed by (source, SPI), each an
 *   EVP context and a VXDP_ESP_WINDOW-packet anti-replay window. An SA is created only once a
 *   packet under it authenticated (a trial context is keyed first, then swapped in), so
 *   forged packets cannot fill the table; a full table evicts the least recently used SA.
 *   OpenSSL's expanded key schedules live in its own heap: MADV_DONTDUMP cannot reach them,
 *   EVP_CIPHER_CTX_free cleanses them.
 * Per packet: no allocation; EVP calls on caller buffers (OpenSSL supports out != in and
 * in-place for both AEADs).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "internal.h"

#define IV_LEN 8
#define ICV_LEN 16
#define ESP_MIN (8 + IV_LEN + 2 + ICV_LEN)
#define WORDS (VXDP_ESP_WINDOW / 64)

static const char HKDF_SALT[] = "vxlan-dp esp v1";

struct secrets {                /* in its own DONTDUMP pages */
    uint8_t key[256][32];
    uint8_t have[256];
    uint8_t tx_keymat[36];
    uint8_t scratch[36];
};

struct sa {
    bool used;
    uint8_t key_id;
    uint32_t spi;
    struct vxdp_addr src;
    EVP_CIPHER_CTX *ctx;
    uint8_t salt[4];
    uint64_t top;               /* highest accepted sequence number, 0: none yet */
    uint64_t bits[WORDS];       /* bit (s % W) set: s accepted, for top - W < s <= top */
    uint64_t tick;              /* last use, for LRU eviction */
};

struct vxdp_esp {
    int cipher;                 /* VXDP_CIPHER_* */
    int send_id;
    uint32_t boot;
    uint64_t seq;               /* the next sequence number to send */
    struct vxdp_addr local;
    EVP_CIPHER_CTX *tx, *trial;
    uint8_t tx_salt[4];
    struct secrets *sec;
    struct sa sa[VXDP_ESP_SAS];
    uint64_t clock;
    pthread_mutex_t lock;       /* pumps of several queues seal and open (internal.h "queues"):
                                 * one EVP context, one sequence, one set of replay windows */
};

static const EVP_CIPHER *evp_cipher(int cipher)
{
    return cipher == VXDP_CIPHER_AES256GCM ? EVP_aes_256_gcm()
         : cipher == VXDP_CIPHER_CHACHA20POLY1305 ? EVP_chacha20_poly1305() : NULL;
}

static inline void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p + 2, v);
}

static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* ---- the AEAD, one call each way (also the KAT entry points) ------------------------- */

static int seal_ctx(EVP_CIPHER_CTX *ctx, const uint8_t *salt, const uint8_t *iv,
                    const uint8_t *aad, size_t aadlen, const uint8_t *const *in,
                    const size_t *inlen, int nin, uint8_t *out, uint8_t *tag)
{
    uint8_t nonce[12];
    int l;
    memcpy(nonce, salt, 4);
    memcpy(nonce + 4, iv, IV_LEN);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1)
        return -EIO;
    if (aadlen && EVP_EncryptUpdate(ctx, NULL, &l, aad, (int)aadlen) != 1)
        return -EIO;
    size_t at = 0;
    for (int i = 0; i < nin; i++) {
        if (!inlen[i])
            continue;
        if (EVP_EncryptUpdate(ctx, out + at, &l, in[i], (int)inlen[i]) != 1)
            return -EIO;
        at += (size_t)l;
    }
    if (EVP_EncryptFinal_ex(ctx, out + at, &l) != 1)
        return -EIO;
    at += (size_t)l;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, ICV_LEN, tag) != 1)
        return -EIO;
    return (int)at;
}

/* Decrypts ct (len bytes, then the ICV) to out; the plaintext length, or -EBADMSG. */
static int open_ctx(EVP_CIPHER_CTX *ctx, const uint8_t *salt, const uint8_t *iv,
                    const uint8_t *aad, size_t aadlen, const uint8_t *ct, size_t len,
                    uint8_t *out)
{
    uint8_t nonce[12], tag[ICV_LEN];
    int l, l2;
    memcpy(nonce, salt, 4);
    memcpy(nonce + 4, iv, IV_LEN);
    memcpy(tag, ct + len, ICV_LEN);     /* out may overlap the ICV's bytes: keep a copy */
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1)
        return -EIO;
    if (aadlen && EVP_DecryptUpdate(ctx, NULL, &l, aad, (int)aadlen) != 1)
        return -EIO;
    l = 0;
    if (len && EVP_DecryptUpdate(ctx, out, &l, ct, (int)len) != 1)
        return -EBADMSG;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, ICV_LEN, tag) != 1)
        return -EIO;
    if (EVP_DecryptFinal_ex(ctx, out + l, &l2) != 1)
        return -EBADMSG;
    return l + l2;
}

static EVP_CIPHER_CTX *new_ctx(int cipher, const uint8_t *key)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return NULL;
    /* both AEADs take a 12-byte nonce by default (RFC 4106 sec. 4, RFC 7634 sec. 2) */
    if (EVP_CipherInit_ex(ctx, evp_cipher(cipher), NULL, key, NULL, 1) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Re-keys ctx (created for the same cipher) for decryption or encryption. */
static int rekey(EVP_CIPHER_CTX *ctx, const uint8_t *key, int enc)
{
    return EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, enc) == 1 ? 0 : -EIO;
}

int vxdp_aead_seal(int cipher, const uint8_t *keymat, const uint8_t *iv, const uint8_t *aad,
                   size_t aadlen, const uint8_t *in, size_t len, uint8_t *out)
{
    if (!evp_cipher(cipher) || len > 0x7FFFFFF0 || aadlen > 0x7FFFFFF0)
        return -EINVAL;
    EVP_CIPHER_CTX *ctx = new_ctx(cipher, keymat);
    if (!ctx)
        return -ENOMEM;
    size_t l = len;
    int r = seal_ctx(ctx, keymat + 32, iv, aad, aadlen, &in, &l, 1, out, out + len);
    EVP_CIPHER_CTX_free(ctx);
    return r < 0 ? r : r + ICV_LEN;
}

int vxdp_aead_open(int cipher, const uint8_t *keymat, const uint8_t *iv, const uint8_t *aad,
                   size_t aadlen, const uint8_t *in, size_t len, uint8_t *out)
{
    if (!evp_cipher(cipher) || len > 0x7FFFFFF0 || aadlen > 0x7FFFFFF0)
        return -EINVAL;
    if (len < ICV_LEN)
        return -EBADMSG;
    EVP_CIPHER_CTX *ctx = new_ctx(cipher, keymat);
    if (!ctx)
        return -ENOMEM;
    if (rekey(ctx, keymat, 0) < 0) {
        EVP_CIPHER_CTX_free(ctx);
        return -EIO;
    }
    int r = open_ctx(ctx, keymat + 32, iv, aad, aadlen, in, len - ICV_LEN, out);
    EVP_CIPHER_CTX_free(ctx);
    return r;
}

/* ---- keys ------------------------------------------------------------------------------ */

/* HKDF-SHA256(IKM = key, salt = HKDF_SALT, info = cipher | SPI | sender) -> 36 bytes. */
static int derive(int cipher, const uint8_t *key, uint32_t spi, const struct vxdp_addr *sender,
                  uint8_t *out)
{
    uint8_t info[1 + 4 + 16];
    size_t alen = sender->family == 4 ? 4 : 16;
    info[0] = (uint8_t)cipher;
    put32(info + 1, spi);
    memcpy(info + 5, sender->bytes, alen);
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    if (!kc)
        return -ENOMEM;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, 32),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)HKDF_SALT,
                                          sizeof HKDF_SALT - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 5 + alen),
        OSSL_PARAM_construct_end(),
    };
    int r = EVP_KDF_derive(kc, out, 36, params) == 1 ? 0 : -EIO;
    EVP_KDF_CTX_free(kc);
    return r;
}

uint32_t vxdp_esp_spi(int key_id, uint32_t boot)
{
    return (boot >> 16 & 0xFF) << 24 | (uint32_t)key_id << 16 | (boot & 0xFFFF);
}

static void sa_clear(struct sa *s)
{
    EVP_CIPHER_CTX_free(s->ctx);    /* cleanses the key schedule */
    OPENSSL_cleanse(s, sizeof *s);
}

void vxdp_esp_free(struct vxdp_esp *x)
{
    if (!x)
        return;
    for (int i = 0; i < VXDP_ESP_SAS; i++)
        sa_clear(&x->sa[i]);
    EVP_CIPHER_CTX_free(x->tx);
    EVP_CIPHER_CTX_free(x->trial);
    pthread_mutex_destroy(&x->lock);
    if (x->sec) {
        OPENSSL_cleanse(x->sec, sizeof *x->sec);
        munmap(x->sec, sizeof *x->sec);
    }
    OPENSSL_cleanse(x, sizeof *x);
    free(x);
}

/* (Re)installs keys: ids[i] / keys[32 * i], i < n. The first call sets cipher, boot id and
 * local address; later ones replace the key set (a reload, a rotation): receive SAs of
 * removed or changed keys go, and the sender re-keys if its key changed. */
int vxdp_esp_set(struct vxdp_esp **px, const struct vxdp_addr *local, int cipher,
                 const uint8_t *ids, const uint8_t *keys, int n, int send_id, uint32_t boot)
{
    if (!evp_cipher(cipher) || n < 1 || n > 255 || send_id < 1 || send_id > 255 ||
        boot > 0xFFFFFF)
        return -EINVAL;
    uint8_t seen[256] = { 0 };
    bool send_ok = false;
    for (int i = 0; i < n; i++) {
        if (!ids[i] || seen[ids[i]])
            return -EINVAL;
        seen[ids[i]] = 1;
        send_ok |= ids[i] == send_id;
    }
    if (!send_ok)
        return -EINVAL;
    struct vxdp_esp *x = *px;
    bool fresh = !x;
    if (x && (x->cipher != cipher || x->boot != boot))
        return -EINVAL;         /* a cipher or boot change is a new network, not a reload */
    if (fresh) {
        x = calloc(1, sizeof *x);
        if (!x)
            return -ENOMEM;
        pthread_mutex_init(&x->lock, NULL);
        x->sec = mmap(NULL, sizeof *x->sec, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (x->sec == MAP_FAILED) {
            x->sec = NULL;
            vxdp_esp_free(x);
            return -ENOMEM;
        }
        madvise(x->sec, sizeof *x->sec, MADV_DONTDUMP);    /* best effort: see the top */
        x->cipher = cipher;
        x->boot = boot;
        x->local = *local;
        x->seq = 1;
        static const uint8_t zero[32];
        x->tx = new_ctx(cipher, zero);
        x->trial = new_ctx(cipher, zero);
        if (!x->tx || !x->trial) {
            vxdp_esp_free(x);
            return -ENOMEM;
        }
    }
    struct secrets *sec = x->sec;
    bool tx_changed = fresh || x->send_id != send_id;
    for (int i = 0; i < n; i++)
        if (ids[i] == send_id && (!sec->have[send_id] ||
                                  memcmp(sec->key[send_id], keys + 32 * (size_t)i, 32)))
            tx_changed = true;
    /* receive SAs under a key that goes or changes go too */
    for (int k = 1; k < 256; k++) {
        bool keep = false;
        for (int i = 0; i < n; i++)
            if (ids[i] == k && sec->have[k] && !memcmp(sec->key[k], keys + 32 * (size_t)i, 32))
                keep = true;
        if (keep)
            continue;
        for (int s = 0; s < VXDP_ESP_SAS; s++)
            if (x->sa[s].used && x->sa[s].key_id == k)
                sa_clear(&x->sa[s]);
        if (sec->have[k]) {
            OPENSSL_cleanse(sec->key[k], 32);
            sec->have[k] = 0;
        }
    }
    for (int i = 0; i < n; i++) {
        memcpy(sec->key[ids[i]], keys + 32 * (size_t)i, 32);
        sec->have[ids[i]] = 1;
    }
    if (tx_changed) {
        int r = derive(cipher, sec->key[send_id], vxdp_esp_spi(send_id, boot), &x->local,
                       sec->tx_keymat);
        if (r == 0)
            r = rekey(x->tx, sec->tx_keymat, 1);
        memcpy(x->tx_salt, sec->tx_keymat + 32, 4);
        OPENSSL_cleanse(sec->tx_keymat, sizeof sec->tx_keymat);
        if (r < 0) {
            if (fresh)
                vxdp_esp_free(x);
            return r;
        }
    }
    x->send_id = send_id;
    *px = x;
    return 0;
}

/* ---- egress ---------------------------------------------------------------------------- */

uint32_t vxdp_esp_overhead_max(void)
{
    return 8 + 8 + IV_LEN + 3 + 2 + ICV_LEN;    /* UDP + ESP + IV + worst padding + trailer + ICV */
}

/* The encrypted form of the outer packet {h[0..hlen), frame[0..len)} (IP header first),
 * as vxlan_dp.wire.esp.seal_packet builds it, at out; returns its length (0: failed). */
static uint32_t seal_locked(struct vxdp_esp *x, int family, const uint8_t *h, int hlen,
                            const uint8_t *frame, uint32_t len, uint8_t *out);

uint32_t vxdp_esp_seal(struct vxdp_esp *x, int family, const uint8_t *h, int hlen,
                       const uint8_t *frame, uint32_t len, uint8_t *out)
{
    pthread_mutex_lock(&x->lock);
    uint32_t r = seal_locked(x, family, h, hlen, frame, len, out);
    pthread_mutex_unlock(&x->lock);
    return r;
}

static uint32_t seal_locked(struct vxdp_esp *x, int family, const uint8_t *h, int hlen,
                            const uint8_t *frame, uint32_t len, uint8_t *out)
{
    int iphl = family == 4 ? 20 : 40;
    uint32_t inner = (uint32_t)(hlen - iphl) + len;     /* the plaintext UDP datagram */
    uint32_t pad = (uint32_t)(-(int64_t)(inner + 2) & 3);
    uint32_t esplen = 8 + IV_LEN + inner + pad + 2 + ICV_LEN;
    uint8_t *udp = out + iphl, *esp = udp + 8;
    uint64_t seq = x->seq++;
    uint32_t spi = vxdp_esp_spi(x->send_id, x->boot);
    memcpy(out, h, (size_t)iphl);
    put32(esp, spi);
    put32(esp + 4, (uint32_t)seq);
    put32(esp + 8, (uint32_t)(seq >> 32));
    put32(esp + 12, (uint32_t)seq);
    uint8_t aad[12], trailer[5];
    put32(aad, spi);
    put32(aad + 4, (uint32_t)(seq >> 32));
    put32(aad + 8, (uint32_t)seq);
    for (uint32_t i = 0; i < pad; i++)
        trailer[i] = (uint8_t)(i + 1);
    trailer[pad] = (uint8_t)pad;
    trailer[pad + 1] = 17;      /* next header: UDP */
    const uint8_t *in[3] = { h + iphl, frame, trailer };
    size_t inl[3] = { (size_t)(hlen - iphl), len, pad + 2 };
    uint8_t *ct = esp + 8 + IV_LEN;
    if (seal_ctx(x->tx, x->tx_salt, esp + 8, aad, sizeof aad, in, inl, 3, ct,
                 ct + inner + pad + 2) < 0)
        return 0;
    memcpy(udp, h + iphl, 4);   /* the flow's source port and the network's port */
    put16(udp + 4, 8 + esplen);
    put16(udp + 6, 0);
    if (family == 4) {
        put16(out + 2, (uint32_t)iphl + 8 + esplen);
        put16(out + 10, 0);
        uint16_t c = (uint16_t)~vxdp_csum_fold(vxdp_csum_partial(out, 20, 0));
        memcpy(out + 10, &c, 2);    /* host-order sum stored in host order (RFC 1071 2(B)) */
    } else {
        put16(out + 4, 8 + esplen);
        uint64_t sum = vxdp_csum_partial(out + 8, 32, 0);  /* pseudo-header addresses */
        uint8_t ph[8] = { 0 };
        put32(ph, 8 + esplen);
        ph[7] = 17;
        sum = vxdp_csum_partial(ph, 8, sum);
        sum = vxdp_csum_partial(udp, 8 + esplen, sum);
        uint16_t c = (uint16_t)~vxdp_csum_fold(sum);
        if (c == 0)
            c = 0xFFFF;         /* RFC 768 / RFC 8200 sec. 8.1: 0 means "no checksum" */
        memcpy(udp + 6, &c, 2);
    }
    return (uint32_t)iphl + 8 + esplen;
}

/* ---- ingress --------------------------------------------------------------------------- */

/* Before the source check: VXDP_ESP_* (0: go on). */
int vxdp_esp_precheck(const uint8_t *p, uint32_t len)
{
    if (len < 8)
        return VXDP_ESP_TOO_SHORT;
    if (p[1] == 0)              /* key id 0: what every plaintext VXLAN / GRE header has */
        return VXDP_ESP_PLAINTEXT;
    if (len < ESP_MIN)
        return VXDP_ESP_TOO_SHORT;
    return 0;
}

static bool win_check(const struct sa *s, uint64_t seq)
{
    if (seq == 0)
        return false;
    if (seq > s->top)
        return true;
    if (s->top - seq >= VXDP_ESP_WINDOW)
        return false;
    return !(s->bits[(seq / 64) % WORDS] >> (seq % 64) & 1);
}

static void win_update(struct sa *s, uint64_t seq)
{
    if (seq > s->top) {
        uint64_t d = seq - s->top;
        if (d >= VXDP_ESP_WINDOW) {
            memset(s->bits, 0, sizeof s->bits);
        } else {                /* clear the bits of top+1 .. seq: they are new */
            for (uint64_t q = s->top + 1; q <= seq; q++) {
                if (q % 64 == 0 && seq - q >= 63) {
                    s->bits[(q / 64) % WORDS] = 0;
                    q += 63;
                    continue;
                }
                s->bits[(q / 64) % WORDS] &= ~(1ULL << (q % 64));
            }
        }
        s->top = seq;
    }
    s->bits[(seq / 64) % WORDS] |= 1ULL << (seq % 64);
}

/* RFC 4303 Appendix A2.2; -1 (as all ones) when no valid number fits. */
static uint64_t infer(const struct sa *s, uint32_t lo, bool *ok)
{
    uint32_t th = (uint32_t)(s->top >> 32), tl = (uint32_t)s->top;
    int64_t sh;
    const uint32_t w = VXDP_ESP_WINDOW;
    if (tl >= w - 1)
        sh = lo < tl - w + 1 ? (int64_t)th + 1 : th;
    else
        sh = lo >= (uint32_t)(tl - w + 1) ? (int64_t)th - 1 : th;
    *ok = sh >= 0 && sh <= 0xFFFFFFFFLL;
    return (uint64_t)sh << 32 | lo;
}

static struct sa *sa_find(struct vxdp_esp *x, const struct vxdp_addr *src, uint32_t spi)
{
    for (int i = 0; i < VXDP_ESP_SAS; i++) {
        struct sa *s = &x->sa[i];
        if (s->used && s->spi == spi && !memcmp(&s->src, src, sizeof *src))
            return s;
    }
    return NULL;
}

static struct sa *sa_slot(struct vxdp_esp *x)
{
    struct sa *lru = &x->sa[0];
    for (int i = 0; i < VXDP_ESP_SAS; i++) {
        if (!x->sa[i].used)
            return &x->sa[i];
        if (x->sa[i].tick < lru->tick)
            lru = &x->sa[i];
    }
    return lru;
}

/* After the source check. p[0..len) is the ESP packet, decrypted in place on success:
 * *off / *plen then give the VXLAN / GRE-in-UDP payload (after the inner UDP header). */
static int open_locked(struct vxdp_esp *x, const struct vxdp_addr *src, uint8_t *p,
                       uint32_t len, uint32_t *off, uint32_t *plen);

int vxdp_esp_open(struct vxdp_esp *x, const struct vxdp_addr *src, uint8_t *p, uint32_t len,
                  uint32_t *off, uint32_t *plen)
{
    pthread_mutex_lock(&x->lock);
    int r = open_locked(x, src, p, len, off, plen);
    pthread_mutex_unlock(&x->lock);
    return r;
}

static int open_locked(struct vxdp_esp *x, const struct vxdp_addr *src, uint8_t *p,
                       uint32_t len, uint32_t *off, uint32_t *plen)
{
    uint32_t spi = get32(p);
    int kid = p[1];
    if (!x->sec->have[kid])
        return VXDP_ESP_UNKNOWN_KEY;
    struct sa *s = sa_find(x, src, spi);
    static const struct sa empty;
    const struct sa *w = s ? s : &empty;
    uint32_t lo = get32(p + 4);
    uint64_t iv = get64(p + 8), seq;
    bool ok = true;
    if ((uint32_t)iv == lo && iv)
        seq = iv;               /* our senders' IV is the sequence number (esp.py esp_seq) */
    else
        seq = infer(w, lo, &ok);
    if (!ok || !win_check(w, seq))
        return VXDP_ESP_REPLAY;
    uint8_t aad[12];
    put32(aad, spi);
    put32(aad + 4, (uint32_t)(seq >> 32));
    put32(aad + 8, lo);
    uint32_t ctlen = len - 16 - ICV_LEN;
    uint8_t *ct = p + 16;
    int r;
    if (s) {
        r = open_ctx(s->ctx, s->salt, p + 8, aad, sizeof aad, ct, ctlen, ct);
    } else {
        uint8_t *km = x->sec->scratch;
        r = derive(x->cipher, x->sec->key[kid], spi, src, km);
        if (r == 0)
            r = rekey(x->trial, km, 0);
        uint8_t salt[4];
        memcpy(salt, km + 32, 4);
        OPENSSL_cleanse(km, 36);
        if (r == 0)
            r = open_ctx(x->trial, salt, p + 8, aad, sizeof aad, ct, ctlen, ct);
        if (r >= 0) {           /* authentic: the trial context becomes the SA's */
            s = sa_slot(x);
            EVP_CIPHER_CTX *old = s->ctx;
            if (s->used)
                OPENSSL_cleanse(s, sizeof *s);
            memset(s, 0, sizeof *s);
            s->used = true;
            s->key_id = (uint8_t)kid;
            s->spi = spi;
            s->src = *src;
            memcpy(s->salt, salt, 4);
            s->ctx = x->trial;
            x->trial = old ? old : new_ctx(x->cipher, x->sec->scratch);
            if (!x->trial) {    /* out of memory: give this SA's context back */
                x->trial = s->ctx;
                s->used = false;
                s->ctx = NULL;
                return VXDP_ESP_AUTH;
            }
        }
        OPENSSL_cleanse(salt, 4);
    }
    if (r < 0)
        return VXDP_ESP_AUTH;
    win_update(s, seq);
    s->tick = ++x->clock;
    uint32_t ptlen = (uint32_t)r;
    uint32_t pad = ct[ptlen - 2];
    if (pad + 2 > ptlen || ct[ptlen - 1] != 17)
        return VXDP_ESP_MALFORMED;
    uint32_t dlen = ptlen - 2 - pad;    /* the inner UDP datagram */
    if (dlen < 8 || ((uint32_t)ct[4] << 8 | ct[5]) != dlen)
        return VXDP_ESP_MALFORMED;
    *off = 16 + 8;
    *plen = dlen - 8;
    return 0;
}
