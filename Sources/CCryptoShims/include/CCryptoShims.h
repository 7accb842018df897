// C shims for the crypto libraries. ipsec-mb's AES-GCM entry points are function-like macros over
// function pointers in IMB_MGR, which Swift cannot see; OpenSSL's GCM sequence is five calls with
// macros for the tag controls. Each shim is one call from Swift with raw pointers only.
#ifndef EE_CRYPTO_SHIMS_H
#define EE_CRYPTO_SHIMS_H

#include <stddef.h>
#include <stdint.h>

// MARK: Intel ipsec-mb, direct AES-GCM API

/// Size and alignment of ipsec-mb's expanded GCM key (struct gcm_key_data).
size_t ee_imb_key_size(void);
size_t ee_imb_key_alignment(void);
/// 1 when ipsec-mb runs on this CPU (x86-64 with AES-NI); the manager is created once per process.
int ee_imb_available(void);
/// Name of the code path ipsec-mb picked (sse, avx, avx2, avx512...).
const char *ee_imb_arch_name(void);
/// Expands `key` (16 or 32 bytes) into `key_data`. Returns 0, or -1 for a bad length or no ipsec-mb.
int ee_imb_gcm_key_init(void *key_data, const uint8_t *key, int key_len);
/// AES-GCM seal: `len` bytes `src` → `dst` (the same or disjoint), 16-byte tag. `iv` is 12 bytes.
void ee_imb_gcm_seal(const void *key_data, int key_len, uint8_t *dst, const uint8_t *src, uint64_t len,
                     const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, uint8_t *tag);
/// AES-GCM open: decrypts into `dst` (the same as `src`, or disjoint) and compares the 16-byte tag in constant
/// time. Returns 1 if the tag verified; on 0 the caller must discard `dst`.
int ee_imb_gcm_open(const void *key_data, int key_len, uint8_t *dst, const uint8_t *src, uint64_t len,
                    const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, const uint8_t *tag);

// MARK: Our AES-GCM for CPUs with VAES and VPCLMULQDQ but no AVX-512 (vaes_gcm.c)

/// Size and alignment of the expanded key (round keys and hash-key powers).
size_t ee_vgcm_key_size(void);
size_t ee_vgcm_key_alignment(void);
/// 1 when the CPU has VAES, VPCLMULQDQ and AVX2 and the OS saves YMM state.
int ee_vgcm_available(void);
/// Expands `key` (16 or 32 bytes) into `key_data`. Returns 0, or -1 for a bad length or a CPU
/// without the instructions.
int ee_vgcm_key_init(void *key_data, const uint8_t *key, int key_len);
/// AES-GCM seal: `len` bytes `src` → `dst` (the same or disjoint), 16-byte tag. `iv` is 12 bytes.
void ee_vgcm_seal(const void *key_data, uint8_t *dst, const uint8_t *src, uint64_t len, const uint8_t *iv,
                  const uint8_t *aad, uint64_t aad_len, uint8_t *tag);
/// AES-GCM open into `dst` (the same as `src`, or disjoint); the tag is compared in constant time. Returns 1 if
/// it verified; on 0 the caller must discard `dst`.
int ee_vgcm_open(const void *key_data, uint8_t *dst, const uint8_t *src, uint64_t len, const uint8_t *iv,
                 const uint8_t *aad, uint64_t aad_len, const uint8_t *tag);

// MARK: OpenSSL 3 EVP

/// A GCM context keyed once (cipher fetched once per process). `encrypt` 1 for sealing.
/// Returns NULL on failure. Not thread-safe: one context per key per thread.
void *ee_evp_gcm_new(const uint8_t *key, int key_len, int encrypt);
void ee_evp_gcm_free(void *ctx);
/// Seal with a new IV only (no key re-expansion). Returns 1 on success.
int ee_evp_gcm_seal(void *ctx, uint8_t *dst, const uint8_t *src, int len, const uint8_t *iv,
                    const uint8_t *aad, int aad_len, uint8_t *tag);
/// Open; returns 1 if the tag verified.
int ee_evp_gcm_open(void *ctx, uint8_t *dst, const uint8_t *src, int len, const uint8_t *iv,
                    const uint8_t *aad, int aad_len, const uint8_t *tag);

/// Zeroes `len` bytes at `p` in a way the compiler cannot drop (OPENSSL_cleanse): for key
/// material in buffers about to be given back.
void ee_cleanse(void *p, size_t len);

/// HKDF-SHA256 expand-only (RFC 5869) with `info`; returns 1 on success.
int ee_hkdf_expand_sha256(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                          uint8_t *out, size_t out_len);

/// Constant-time comparison; 1 if equal.
int ee_ct_equal(const void *a, const void *b, size_t len);

/// Fills `out` with cryptographically secure random bytes; 1 on success.
int ee_random_bytes(void *out, size_t len);

#endif

// MARK: X.509 certificates (ECDSA P-256), for `eekv certs init`

/// Writes a self-signed CA certificate and its key (PEM; the key file is mode 0600).
/// Returns 0, or -1 with a message in `err`.
int ee_cert_write_ca(const char *cert_path, const char *key_path, const char *common_name, int days,
                     char *err, size_t err_len);
/// Writes a certificate signed by the CA, and its key. `server` 1 adds the serverAuth usage (nodes
/// are servers and clients), 0 gives clientAuth only. Validity runs from now + `not_before_s` to
/// now + `not_after_s` (negative values make certificates that are not yet or no longer valid,
/// for tests). Returns 0, or -1 with a message in `err`.
int ee_cert_write_signed(const char *ca_cert_path, const char *ca_key_path, const char *cert_path,
                         const char *key_path, const char *common_name, int server, long not_before_s,
                         long not_after_s, char *err, size_t err_len);

// MARK: TLS 1.3 with mutual authentication, for the session-management channel

/// A TLS 1.3-only context that presents `cert`/`key` and requires the peer to present a
/// certificate issued by `ca`. NULL on failure, with a message in `err`.
void *ee_tls_context_new(int server, const char *ca_path, const char *cert_path, const char *key_path,
                         char *err, size_t err_len);
void ee_tls_context_free(void *ctx);
/// Runs the handshake on a connected blocking socket (its timeouts apply). A client with a
/// `peer_name` (NULL or "" for none) refuses a server whose certificate is not issued to that
/// name (a DNS name or CN; an IPv4 or IPv6 address must be among the certificate's addresses). Returns the connection, or NULL with the reason in `err` (the socket is left open for
/// the caller).
void *ee_tls_handshake(void *ctx, int fd, int server, const char *peer_name, char *err, size_t err_len);
int ee_tls_write_all(void *ssl, const void *buf, size_t len);
/// Reads exactly `len` bytes. Returns 0; -2 if the peer ended the connection with a TLS alert
/// (its refusal, described in `err`); -3 if it closed the connection; -1 on timeout or another
/// error.
int ee_tls_read_exact(void *ssl, void *buf, size_t len, char *err, size_t err_len);
/// Reads what is available, up to `len` bytes (blocking until at least one). Returns the count,
/// 0 at a clean close, -1 on error.
long ee_tls_read_some(void *ssl, void *buf, size_t len);

/// RFC 8446 exporter. Returns 1 on success.
int ee_tls_export(void *ssl, const char *label, const uint8_t *context, size_t context_len, uint8_t *out,
                  size_t out_len);
/// The peer certificate's subject common name; 1 on success.
int ee_tls_peer_name(void *ssl, char *out, size_t out_len);
/// SHA-256 of the peer certificate (DER) into `out` (32 bytes); 1 on success, 0 without one.
int ee_tls_peer_fingerprint(void *ssl, uint8_t *out);
/// Sends close_notify (best effort) and frees the connection; the socket stays open.
void ee_tls_free(void *ssl);

/// A bare TLS 1.3 client for tests and diagnostics: connects to `ip:port`, trusts `ca_path`,
/// presents `cert_path`/`key_path` if given (NULL: no certificate, like `openssl s_client`), sends
/// `len` bytes and reads `len` back. Returns 1 only if the handshake and that exchange completed;
/// otherwise 0 with the reason in `err`.
int ee_tls_probe(uint32_t ip, uint16_t port, const char *ca_path, const char *cert_path, const char *key_path,
                 const void *request, void *response, size_t len, char *err, size_t err_len);
