#include "CCryptoShims.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// Before any other OpenSSL call: no cleanup at exit. eeRPC runs OpenSSL on threads of its own
// (session-management exchanges, AES workers) that can still be finishing when the process
// exits; OpenSSL's atexit handler frees its global locks under them, and a thread tearing
// down its OpenSSL state then crashed (SIGSEGV in pthread_rwlock_wrlock) in about one failed
// `eekv get` in four. The kernel reclaims the memory at exit anyway.
__attribute__((constructor)) static void ee_openssl_without_atexit_cleanup(void) {
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
}

static void set_error(char *err, size_t err_len, const char *what) {
    if (!err || err_len == 0) return;
    unsigned long e = ERR_get_error();
    if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(err, err_len, "%s: %s", what, buf);
    } else {
        snprintf(err, err_len, "%s", what);
    }
    ERR_clear_error();
}

// MARK: Certificates

static EVP_PKEY *new_p256_key(void) { return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); }

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static int write_key(const char *path, EVP_PKEY *key) {
    // Not through a symlink planted in the directory, and 0600 even over an existing file (whose
    // mode open() would keep).
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    if (fd < 0) return 0;
    if (fchmod(fd, 0600) != 0) { close(fd); return 0; }
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); return 0; }
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return ok;
}

static int write_cert(const char *path, X509 *cert) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = PEM_write_X509(f, cert);
    fclose(f);
    return ok;
}

static X509 *new_cert(EVP_PKEY *key, const char *cn, long not_before_s, long not_after_s) {
    X509 *cert = X509_new();
    if (!cert) return NULL;
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7F;  // positive
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
    BN_free(bn);
    X509_set_version(cert, 2);
    X509_gmtime_adj(X509_getm_notBefore(cert), not_before_s);
    X509_gmtime_adj(X509_getm_notAfter(cert), not_after_s);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"eekv cluster", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    return cert;
}

int ee_cert_write_ca(const char *cert_path, const char *key_path, const char *cn, int days, char *err,
                     size_t err_len) {
    EVP_PKEY *key = new_p256_key();
    if (!key) { set_error(err, err_len, "generating the CA key"); return -1; }
    X509 *cert = new_cert(key, cn, -60, (long)days * 86400);
    int ok = cert != NULL;
    ok = ok && X509_set_issuer_name(cert, X509_get_subject_name(cert));
    ok = ok && add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    ok = ok && add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    ok = ok && add_ext(cert, cert, NID_subject_key_identifier, "hash");
    ok = ok && X509_sign(cert, key, EVP_sha256()) > 0;
    if (!ok) { set_error(err, err_len, "building the CA certificate"); }
    else if (!write_cert(cert_path, cert)) { ok = 0; snprintf(err, err_len, "writing %s: %s", cert_path, strerror(errno)); }
    else if (!write_key(key_path, key)) { ok = 0; snprintf(err, err_len, "writing %s: %s", key_path, strerror(errno)); }
    X509_free(cert);
    EVP_PKEY_free(key);
    return ok ? 0 : -1;
}

int ee_cert_write_signed(const char *ca_cert_path, const char *ca_key_path, const char *cert_path,
                         const char *key_path, const char *cn, int server, long not_before_s, long not_after_s,
                         char *err, size_t err_len) {
    FILE *f = fopen(ca_cert_path, "r");
    if (!f) { snprintf(err, err_len, "reading %s: %s", ca_cert_path, strerror(errno)); return -1; }
    X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(ca_key_path, "r");
    if (!f) { X509_free(ca); snprintf(err, err_len, "reading %s: %s", ca_key_path, strerror(errno)); return -1; }
    EVP_PKEY *ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca || !ca_key) {
        set_error(err, err_len, "parsing the CA certificate or key");
        X509_free(ca);
        EVP_PKEY_free(ca_key);
        return -1;
    }
    EVP_PKEY *key = new_p256_key();
    X509 *cert = key ? new_cert(key, cn, not_before_s, not_after_s) : NULL;
    int ok = cert != NULL;
    ok = ok && X509_set_issuer_name(cert, X509_get_subject_name(ca));
    ok = ok && add_ext(cert, ca, NID_basic_constraints, "critical,CA:FALSE");
    ok = ok && add_ext(cert, ca, NID_key_usage, "critical,digitalSignature");
    ok = ok && add_ext(cert, ca, NID_ext_key_usage, server ? "serverAuth,clientAuth" : "clientAuth");
    ok = ok && add_ext(cert, ca, NID_subject_key_identifier, "hash");
    ok = ok && add_ext(cert, ca, NID_authority_key_identifier, "keyid:always");
    ok = ok && X509_sign(cert, ca_key, EVP_sha256()) > 0;
    if (!ok) { set_error(err, err_len, "building the certificate"); }
    else if (!write_cert(cert_path, cert)) { ok = 0; snprintf(err, err_len, "writing %s: %s", cert_path, strerror(errno)); }
    else if (!write_key(key_path, key)) { ok = 0; snprintf(err, err_len, "writing %s: %s", key_path, strerror(errno)); }
    X509_free(cert);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return ok ? 0 : -1;
}

// MARK: TLS

/* A socket BIO that writes with send(MSG_NOSIGNAL): OpenSSL's own socket BIO uses write(), which
   raises SIGPIPE (killing the process) when the peer has hung up. With this one the write fails
   with EPIPE and the caller reports it. Reads, control and the rest behave as a plain socket BIO. */
static BIO_METHOD *nosigpipe_method;
static pthread_once_t nosigpipe_once = PTHREAD_ONCE_INIT;

static int nosigpipe_write(BIO *b, const char *data, int len) {
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(fd, data, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(b);
    return (int)n;
}

static int nosigpipe_read(BIO *b, char *data, int len) {
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(fd, data, (size_t)len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
    return (int)n;
}

static long nosigpipe_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_C_GET_FD:
        if (ptr) *(int *)ptr = (int)(intptr_t)BIO_get_data(b);
        return (long)(intptr_t)BIO_get_data(b);
    default: return 0;
    }
}

static int nosigpipe_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static void nosigpipe_setup(void) {
    nosigpipe_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "eekv socket");
    if (!nosigpipe_method) return;
    BIO_meth_set_write(nosigpipe_method, nosigpipe_write);
    BIO_meth_set_read(nosigpipe_method, nosigpipe_read);
    BIO_meth_set_ctrl(nosigpipe_method, nosigpipe_ctrl);
    BIO_meth_set_create(nosigpipe_method, nosigpipe_create);
}

/* Gives `ssl` the socket through the MSG_NOSIGNAL BIO (a plain socket BIO if that cannot be made). */
static void attach_socket(SSL *ssl, int fd) {
    pthread_once(&nosigpipe_once, nosigpipe_setup);
    BIO *bio = nosigpipe_method ? BIO_new(nosigpipe_method) : NULL;
    if (!bio) {
        SSL_set_fd(ssl, fd);
        return;
    }
    BIO_set_data(bio, (void *)(intptr_t)fd);
    SSL_set_bio(ssl, bio, bio); /* one BIO both ways: SSL_free frees it once; the fd stays ours */
}

void *ee_tls_context_new(int server, const char *ca_path, const char *cert_path, const char *key_path, char *err,
                         size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) { set_error(err, err_len, "SSL_CTX_new"); return NULL; }
    // TLS 1.3 only: the exporter we derive keys from is the RFC 8446 one.
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1) {
        set_error(err, err_len, "loading the cluster CA");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        set_error(err, err_len, "loading the certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        set_error(err, err_len, "loading the private key");
        SSL_CTX_free(ctx);
        return NULL;
    }
    // Mutual authentication: a peer without a certificate from our CA gets no handshake.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 2);
    // Every SM exchange is one short connection; nothing to resume.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    return ctx;
}

void ee_tls_context_free(void *ctx) { SSL_CTX_free(ctx); }

void *ee_tls_handshake(void *c, int fd, int server, const char *peer_name, char *err, size_t err_len) {
    SSL *ssl = SSL_new((SSL_CTX *)c);
    if (!ssl) { set_error(err, err_len, "SSL_new"); return NULL; }
    attach_socket(ssl, fd);
    // Every certificate of the cluster chains to the same CA, so the chain alone would let any
    // node's certificate answer for any other: the client names the peer it means to reach
    // (matched against the certificate's DNS names, or its CN when it has none; an IP address
    // against its IP addresses).
    if (!server && peer_name && *peer_name) {
        unsigned char address[16];
        int is_ip = inet_pton(AF_INET, peer_name, address) == 1 || inet_pton(AF_INET6, peer_name, address) == 1;
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peer_name)
                       : SSL_set1_host(ssl, peer_name);
        if (ok != 1) {
            set_error(err, err_len, "setting the expected peer name");
            SSL_free(ssl);
            return NULL;
        }
    }
    int r = server ? SSL_accept(ssl) : SSL_connect(ssl);
    if (r != 1) {
        long verify = SSL_get_verify_result(ssl);
        if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
            snprintf(err, err_len, "certificate rejected: it is not %s's", peer_name);
            ERR_clear_error();
        } else if (verify != X509_V_OK) {
            snprintf(err, err_len, "certificate rejected: %s", X509_verify_cert_error_string(verify));
            ERR_clear_error();
        } else {
            set_error(err, err_len, server ? "TLS handshake (server)" : "TLS handshake (client)");
        }
        SSL_free(ssl);
        return NULL;
    }
    if (SSL_get0_peer_certificate(ssl) == NULL) {  // cannot happen with FAIL_IF_NO_PEER_CERT; belt and braces
        snprintf(err, err_len, "peer presented no certificate");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

int ee_tls_write_all(void *s, const void *buf, size_t len) {
    size_t written = 0;
    return SSL_write_ex((SSL *)s, buf, len, &written) == 1 && written == len ? 0 : -1;
}

int ee_tls_read_exact(void *s, void *buf, size_t len, char *err, size_t err_len) {
    size_t done = 0;
    while (done < len) {
        size_t n = 0;
        int r = SSL_read_ex((SSL *)s, (char *)buf + done, len - done, &n);
        if (r != 1) {
            int e = SSL_get_error((SSL *)s, r);
            if (e == SSL_ERROR_SSL) {
                set_error(err, err_len, "refused by the peer");
                return -2;
            }
            // A close_notify, or the connection closed under us: the peer gave up, no timeout.
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK)) {
                if (err && err_len) snprintf(err, err_len, "closed by the peer");
                ERR_clear_error();
                return -3;
            }
            if (err && err_len) snprintf(err, err_len, "no answer");
            ERR_clear_error();
            return -1;
        }
        done += n;
    }
    return 0;
}

long ee_tls_read_some(void *s, void *buf, size_t len) {
    size_t n = 0;
    int r = SSL_read_ex((SSL *)s, buf, len, &n);
    if (r == 1) return (long)n;
    int e = SSL_get_error((SSL *)s, r);
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

int ee_tls_export(void *s, const char *label, const uint8_t *context, size_t context_len, uint8_t *out,
                  size_t out_len) {
    return SSL_export_keying_material((SSL *)s, out, out_len, label, strlen(label), context, context_len, 1);
}

int ee_tls_peer_name(void *s, char *out, size_t out_len) {
    X509 *peer = SSL_get0_peer_certificate((SSL *)s);
    if (!peer) return 0;
    return X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, out, (int)out_len) > 0;
}

int ee_tls_peer_fingerprint(void *s, uint8_t *out) {
    X509 *peer = SSL_get0_peer_certificate((SSL *)s);
    unsigned int len = 0;
    if (!peer || X509_digest(peer, EVP_sha256(), out, &len) != 1 || len != 32) return 0;
    return 1;
}

void ee_tls_free(void *s) {
    SSL_shutdown((SSL *)s);
    SSL_free((SSL *)s);
}

int ee_tls_probe(uint32_t ip, uint16_t port, const char *ca_path, const char *cert_path, const char *key_path,
                 const void *request, void *response, size_t len, char *err, size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { set_error(err, err_len, "SSL_CTX_new"); return 0; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_load_verify_locations(ctx, ca_path, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cert_path && (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1 ||
                      SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1)) {
        set_error(err, err_len, "loading the probe's certificate");
        SSL_CTX_free(ctx);
        return 0;
    }
    extern int ee_tcp_connect(uint32_t, uint16_t, int);
    extern int ee_set_io_timeout(int, int);
    int fd = ee_tcp_connect(ip, port, 2000);
    if (fd < 0) { snprintf(err, err_len, "connect: %s", strerror(-fd)); SSL_CTX_free(ctx); return 0; }
    ee_set_io_timeout(fd, 2000);
    SSL *ssl = SSL_new(ctx);
    attach_socket(ssl, fd);
    int ok = 0;
    if (SSL_connect(ssl) != 1) {
        set_error(err, err_len, "handshake");
    } else if (ee_tls_write_all(ssl, request, len) != 0) {
        set_error(err, err_len, "write after handshake");
    } else if (ee_tls_read_exact(ssl, response, len, err, err_len) != 0) {
        // In TLS 1.3 the client finishes its side first; a server that refuses it says so next.
        char reason[256];
        snprintf(reason, sizeof reason, "%s", err);
        snprintf(err, err_len, "read after handshake: %s", reason);
    } else {
        ok = 1;
    }
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return ok;
}
