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
/// AES-GCM seal: `len` bytes `src` → `dst` (may alias), 16-byte tag. `iv` is 12 bytes.
void ee_imb_gcm_seal(const void *key_data, int key_len, uint8_t *dst, const uint8_t *src, uint64_t len,
                     const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, uint8_t *tag);
/// AES-GCM open: decrypts into `dst` (may alias `src`) and compares the 16-byte tag in constant
/// time. Returns 1 if the tag verified; on 0 the caller must discard `dst`.
int ee_imb_gcm_open(const void *key_data, int key_len, uint8_t *dst, const uint8_t *src, uint64_t len,
                    const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, const uint8_t *tag);

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

/// HKDF-SHA256 expand-only (RFC 5869) with `info`; returns 1 on success.
int ee_hkdf_expand_sha256(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                          uint8_t *out, size_t out_len);

/// Constant-time comparison; 1 if equal.
int ee_ct_equal(const void *a, const void *b, size_t len);

/// Fills `out` with cryptographically secure random bytes; 1 on success.
int ee_random_bytes(void *out, size_t len);

#endif
