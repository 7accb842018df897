#include "CCryptoShims.h"

#include <intel-ipsec-mb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

// MARK: ipsec-mb

// One manager per process: the direct GCM API only reads its function pointers, and the
// per-operation state (struct gcm_context_data) lives on the caller's stack, so threads share it.
static IMB_MGR *imb_manager;
static pthread_once_t imb_once = PTHREAD_ONCE_INIT;

static void imb_init(void) {
    IMB_MGR *m = alloc_mb_mgr(0);
    if (!m) return;
    init_mb_mgr_auto(m, NULL);
    if (imb_get_errno(m) != 0) { free_mb_mgr(m); return; }
    imb_manager = m;
}

int ee_imb_available(void) {
    pthread_once(&imb_once, imb_init);
    return imb_manager != NULL;
}

const char *ee_imb_arch_name(void) {
    if (!ee_imb_available()) return "unavailable";
    switch (imb_manager->used_arch) {
    case IMB_ARCH_NOAESNI: return "no-aesni";
    case IMB_ARCH_SSE: return "sse";
    case IMB_ARCH_AVX: return "avx";
    case IMB_ARCH_AVX2: return "avx2";
    case IMB_ARCH_AVX512: return "avx512";
    default: return "unknown";
    }
}

size_t ee_imb_key_size(void) { return sizeof(struct gcm_key_data); }
size_t ee_imb_key_alignment(void) { return 64; }

int ee_imb_gcm_key_init(void *key_data, const uint8_t *key, int key_len) {
    if (!ee_imb_available()) return -1;
    if (key_len == 16) IMB_AES128_GCM_PRE(imb_manager, key, key_data);
    else if (key_len == 32) IMB_AES256_GCM_PRE(imb_manager, key, key_data);
    else return -1;
    return 0;
}

void ee_imb_gcm_seal(const void *key_data, int key_len, uint8_t *dst, const uint8_t *src, uint64_t len,
                     const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, uint8_t *tag) {
    struct gcm_context_data ctx;
    if (key_len == 16)
        IMB_AES128_GCM_ENC(imb_manager, key_data, &ctx, dst, src, len, iv, aad, aad_len, tag, 16);
    else
        IMB_AES256_GCM_ENC(imb_manager, key_data, &ctx, dst, src, len, iv, aad, aad_len, tag, 16);
}

int ee_imb_gcm_open(const void *key_data, int key_len, uint8_t *dst, const uint8_t *src, uint64_t len,
                    const uint8_t *iv, const uint8_t *aad, uint64_t aad_len, const uint8_t *tag) {
    struct gcm_context_data ctx;
    uint8_t computed[16];
    if (key_len == 16)
        IMB_AES128_GCM_DEC(imb_manager, key_data, &ctx, dst, src, len, iv, aad, aad_len, computed, 16);
    else
        IMB_AES256_GCM_DEC(imb_manager, key_data, &ctx, dst, src, len, iv, aad, aad_len, computed, 16);
    return CRYPTO_memcmp(computed, tag, 16) == 0;
}

// MARK: OpenSSL EVP

// Explicit fetches, once: implicit fetching (EVP_aes_128_gcm() per init) takes locks
// (openssl/openssl#17064).
static EVP_CIPHER *gcm128, *gcm256;
static pthread_once_t evp_once = PTHREAD_ONCE_INIT;

static void evp_init(void) {
    gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

void *ee_evp_gcm_new(const uint8_t *key, int key_len, int encrypt) {
    pthread_once(&evp_once, evp_init);
    EVP_CIPHER *cipher = key_len == 16 ? gcm128 : key_len == 32 ? gcm256 : NULL;
    if (!cipher) return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return NULL;
    if (EVP_CipherInit_ex(ctx, cipher, NULL, key, NULL, encrypt) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void ee_evp_gcm_free(void *ctx) { EVP_CIPHER_CTX_free(ctx); }

int ee_evp_gcm_seal(void *c, uint8_t *dst, const uint8_t *src, int len, const uint8_t *iv,
                    const uint8_t *aad, int aad_len, uint8_t *tag) {
    EVP_CIPHER_CTX *ctx = c;
    int out = 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return 0;
    if (aad_len > 0 && EVP_EncryptUpdate(ctx, NULL, &out, aad, aad_len) != 1) return 0;
    if (len > 0 && EVP_EncryptUpdate(ctx, dst, &out, src, len) != 1) return 0;
    if (EVP_EncryptFinal_ex(ctx, dst + (len > 0 ? out : 0), &out) != 1) return 0;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

int ee_evp_gcm_open(void *c, uint8_t *dst, const uint8_t *src, int len, const uint8_t *iv,
                    const uint8_t *aad, int aad_len, const uint8_t *tag) {
    EVP_CIPHER_CTX *ctx = c;
    int out = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return 0;
    if (aad_len > 0 && EVP_DecryptUpdate(ctx, NULL, &out, aad, aad_len) != 1) return 0;
    if (len > 0 && EVP_DecryptUpdate(ctx, dst, &out, src, len) != 1) return 0;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1) return 0;
    return EVP_DecryptFinal_ex(ctx, dst + (len > 0 ? out : 0), &out) == 1;
}

void ee_cleanse(void *p, size_t len) { OPENSSL_cleanse(p, len); }

int ee_hkdf_expand_sha256(const uint8_t *prk, size_t prk_len, const uint8_t *info, size_t info_len,
                          uint8_t *out, size_t out_len) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (!kdf) return 0;
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!kctx) return 0;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)prk, prk_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(kctx, out, out_len, params) == 1;
    EVP_KDF_CTX_free(kctx);
    return ok;
}

int ee_ct_equal(const void *a, const void *b, size_t len) { return CRYPTO_memcmp(a, b, len) == 0; }

int ee_random_bytes(void *out, size_t len) { return RAND_bytes(out, (int)len) == 1; }
