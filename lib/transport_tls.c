/* SPDX-License-Identifier: MIT */
/* The TLS transport: OpenSSL 3 over a connected, non-blocking socket.
 *
 * Socket I/O goes through a BIO of our own that calls send() with
 * MSG_NOSIGNAL and recv(), because OpenSSL's socket BIO uses write(), which
 * raises SIGPIPE when the peer has gone; the library must neither die of
 * that nor touch the process's signal dispositions. The BIO also keeps the
 * first bytes the peer sent, so that a peer that does not speak TLS at all
 * (plain TCP, HTTP) is named as such instead of as a protocol error.
 *
 * Writing. SSL_write runs in partial-write mode with at most one record's
 * plaintext (16 KiB) per call, so each call makes exactly one record. Large
 * iovecs are encrypted in place; runs of small ones (zero-copy messages,
 * headers) are first gathered into a per-thread staging buffer so that
 * records stay full. Bytes are reported as written only once OpenSSL has
 * accepted them. When a record could not be flushed (WANT_WRITE) its bytes
 * stay in the connection's queue and the next call must repeat SSL_write
 * with at least as many bytes, the same ones in front (OpenSSL's retry rule;
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows them to have moved): `wpend`
 * remembers that length.
 *
 * Reading. SSL_read with read-ahead fills the first iovec with as many
 * records as OpenSSL holds or one recv() brings. has_pending() tells the
 * connection about decrypted or complete records held inside OpenSSL,
 * which epoll cannot see.
 *
 * Errors. A failed handshake or read is classified into a specific code
 * (see tls.h in include/) with a detail string that names the reason: the
 * verify callback records which certificate failed and why, and alerts
 * received are translated into what the peer meant. */
#include "tls_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

static_assert(sizeof(struct tls_transport) <= 72, "keep the TLS transport small");

static const struct tether_transport_ops tls_ops;
static int g_bio_type; /* the BIO type of our socket BIO */

/* The transport of an SSL, found through its BIO (whose data it is) rather
 * than through ex_data, which would cost every connection an allocation. */
static struct tls_transport *tls_of(const SSL *ssl)
{
    BIO *b = SSL_get_rbio(ssl);
    if (b == NULL || BIO_method_type(b) != g_bio_type) {
        return NULL;
    }
    return BIO_get_data(b);
}

/* ---- error details ----------------------------------------------------- */

static void tls_set_errv(struct tls_transport *t, const char *fmt, va_list ap)
{
    if (t->err == NULL) {
        t->err = malloc(TETHER_ERROR_MSG_MAX);
        if (t->err == NULL) {
            return;
        }
    }
    vsnprintf(t->err, TETHER_ERROR_MSG_MAX, fmt, ap);
}

static void tls_set_err(struct tls_transport *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tls_set_err(struct tls_transport *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tls_set_errv(t, fmt, ap);
    va_end(ap);
}

/* For tls_peer.c. */
struct tls_transport *tether__tls_of(const SSL *ssl)
{
    return tls_of(ssl);
}

void tether__tls_set_err(struct tls_transport *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tls_set_errv(t, fmt, ap);
    va_end(ap);
}

static void asn1_time_text(const ASN1_TIME *tm, char *buf, size_t len)
{
    buf[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL) {
        return;
    }
    ASN1_TIME_print(b, tm);
    int n = BIO_read(b, buf, (int)len - 1);
    buf[n > 0 ? n : 0] = '\0';
    BIO_free(b);
}

/* Records the first verification failure with the certificate it concerns. */
static int tls_verify_cb(int ok, X509_STORE_CTX *sctx)
{
    if (ok) {
        return ok;
    }
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_transport *t = ssl != NULL ? tls_of(ssl) : NULL;
    if (t == NULL || (t->flags & TF_VERIFY_ERR)) {
        return ok;
    }
    t->flags |= TF_VERIFY_ERR;
    int e = X509_STORE_CTX_get_error(sctx);
    X509 *x = X509_STORE_CTX_get_current_cert(sctx);
    const char *who = (t->flags & TF_SERVER) ? "client" : "server";
    char subj[96];
    char iss[96];
    tether__tls_name_rfc2253(x != NULL ? X509_get_subject_name(x) : NULL, subj, sizeof subj);
    tether__tls_name_rfc2253(x != NULL ? X509_get_issuer_name(x) : NULL, iss, sizeof iss);
    char when[40];
    switch (e) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        tls_set_err(t,
                    "certificate verify failed: unknown CA: the %s certificate '%s' is issued "
                    "by '%s', which is not trusted",
                    who, subj, iss);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        tls_set_err(t,
                    "certificate verify failed: unknown CA: the %s certificate '%s' is "
                    "self-signed and not trusted",
                    who, subj);
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        asn1_time_text(X509_get0_notAfter(x), when, sizeof when);
        tls_set_err(t, "certificate verify failed: the %s certificate '%s' has expired (%s)", who,
                    subj, when);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        asn1_time_text(X509_get0_notBefore(x), when, sizeof when);
        tls_set_err(t,
                    "certificate verify failed: the %s certificate '%s' is not yet valid "
                    "(valid from %s)",
                    who, subj, when);
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: {
        char want[128];
        char sans[96];
        tether__tls_expected_name(ssl, want, sizeof want);
        tether__tls_format_sans(x, sans, sizeof sans);
        tls_set_err(t,
                    "certificate verify failed: %s mismatch: the server certificate is not "
                    "valid for '%s' (it is for %s)",
                    e == X509_V_ERR_HOSTNAME_MISMATCH ? "host name" : "IP address",
                    want[0] != '\0' ? want : "?", sans[0] != '\0' ? sans : subj);
        break;
    }
    default:
        tls_set_err(t, "certificate verify failed: %s (%s certificate '%s')",
                    X509_verify_cert_error_string(e), who, subj);
        break;
    }
    return ok;
}

/* Whether the first bytes from the peer can start a TLS record: a record
 * type (change_cipher_spec, alert, handshake, application_data) and major
 * version 3, or an old SSLv2-format ClientHello (high bit set). */
static bool looks_like_tls(const uint8_t *b, size_t n)
{
    if (n == 0) {
        return true;
    }
    if (b[0] & 0x80) {
        return true;
    }
    if (b[0] < 20 || b[0] > 23) {
        return false;
    }
    return n < 2 || b[1] == 3;
}

static void first_bytes_text(const struct tls_transport *t, char *buf, size_t len)
{
    bool text = true;
    for (size_t i = 0; i < t->nfirst; i++) {
        uint8_t ch = t->first[i];
        if (ch < 0x20 || ch > 0x7e) {
            text = ch == '\r' || ch == '\n';
            if (!text) {
                break;
            }
        }
    }
    size_t used = 0;
    if (text) {
        used += (size_t)snprintf(buf, len, "'");
        for (size_t i = 0; i < t->nfirst && used + 4 < len; i++) {
            uint8_t ch = t->first[i];
            if (ch == '\r' || ch == '\n') {
                used += (size_t)snprintf(buf + used, len - used, "\\%c", ch == '\r' ? 'r' : 'n');
            } else {
                buf[used++] = (char)ch;
                buf[used] = '\0';
            }
        }
        snprintf(buf + used, len - used, "...'");
        return;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < t->nfirst && used + 4 < len; i++) {
        used += (size_t)snprintf(buf + used, len - used, "%s%02x", i > 0 ? " " : "", t->first[i]);
    }
}

static const char *version_name(int v)
{
    switch (v) {
    case TLS1_2_VERSION:
        return "TLS 1.2";
    case TLS1_3_VERSION:
        return "TLS 1.3";
    default:
        return "?";
    }
}

/* Translates an alert the peer sent into a code and a detail. */
static int tls_alert_error(struct tls_transport *t, int alert)
{
    const char *desc = SSL_alert_desc_string_long(alert);
    bool server = (t->flags & TF_SERVER) != 0;
    switch (alert) {
    case SSL_AD_CERTIFICATE_REQUIRED:
        tls_set_err(t, "the server requires a client certificate%s",
                    (t->flags & TF_CERT_REQUESTED) ? " (none is configured)" : "");
        return TETHER_ECERTREQUIRED;
    case SSL_AD_HANDSHAKE_FAILURE:
        if (!server && (t->flags & TF_CERT_REQUESTED)) {
            tls_set_err(t, "the server requires a client certificate (none is configured)");
            return TETHER_ECERTREQUIRED;
        }
        tls_set_err(t, "no cipher suite in common: the peer aborted the handshake (alert '%s')",
                    desc);
        return TETHER_ENOSHARED;
    case SSL_AD_PROTOCOL_VERSION:
        tls_set_err(t,
                    "no TLS version in common: the peer rejected ours (we accept %s to %s; "
                    "alert '%s')",
                    version_name(t->cfg->min_version), version_name(t->cfg->max_version), desc);
        return TETHER_ENOSHARED;
    case SSL_AD_INSUFFICIENT_SECURITY:
        tls_set_err(t, "no cipher suite in common that the peer accepts (alert '%s')", desc);
        return TETHER_ENOSHARED;
    case SSL_AD_NO_APPLICATION_PROTOCOL:
        tls_set_err(t, "ALPN mismatch: the peer supports none of our protocols (%s)",
                    t->cfg->alpn_text != NULL ? t->cfg->alpn_text : "we offered none");
        return TETHER_EALPN;
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_ACCESS_DENIED:
        tls_set_err(t, "the %s rejected our certificate (alert '%s')", server ? "client" : "server",
                    desc);
        return TETHER_ECERT;
    case SSL_AD_UNRECOGNIZED_NAME:
        tls_set_err(t, "the server does not serve the name we asked for (SNI; alert '%s')", desc);
        return TETHER_ETLS;
    default:
        tls_set_err(t, "the peer ended the TLS session with alert '%s'", desc);
        return TETHER_ETLS;
    }
}

/* What a peer that sent nothing during the handshake probably is: a client
 * suspects a server that does not speak TLS; a server suspects a port check
 * (a health probe, a scanner) rather than a TLS client. */
static const char *not_tls_hint(const struct tls_transport *t)
{
    return (t->flags & TF_SERVER) ? " (a port check or health probe, or not a TLS client?)"
                                  : " (is it a TLS server?)";
}

/* Classifies a failed SSL call. Called with the OpenSSL error queue of that
 * call; leaves it empty. */
static int tls_fail(struct tls_transport *t, int ssl_err)
{
    bool hs = !(t->flags & TF_HS_DONE);
    unsigned long e = ERR_peek_last_error();
    int lib = ERR_GET_LIB(e);
    int reason = ERR_GET_REASON(e);
    int rv;
    char txt[160];
    ERR_clear_error();

    if (hs && t->nfirst > 0 && !looks_like_tls(t->first, t->nfirst)) {
        first_bytes_text(t, txt, sizeof txt);
        tls_set_err(t, "the peer does not speak TLS (it sent %s)", txt);
        return TETHER_ENOTTLS;
    }
    if (ssl_err == SSL_ERROR_SYSCALL || (e != 0 && lib == ERR_LIB_SYS)) {
        int se = t->sys_errno != 0 ? t->sys_errno : (lib == ERR_LIB_SYS ? reason : 0);
        if (se == 0) {
            /* End of stream without an error (OpenSSL 1.1 style). */
            goto eof;
        }
        rv = tether__errno_to_err(se);
        if (rv == TETHER_ECONNRESET) {
            tls_set_err(t, "connection reset by peer%s%s",
                        !hs              ? ""
                        : t->nfirst == 0 ? " during the TLS handshake, before any TLS data "
                                           "arrived"
                                         : " during the TLS handshake",
                        hs && t->nfirst == 0 ? not_tls_hint(t) : "");
        } else {
            tls_set_err(t, "%s%s", strerror(se), hs ? " during the TLS handshake" : "");
        }
        return rv;
    }
    if (lib != ERR_LIB_SSL) {
        tether__tls_err_text(e, txt, sizeof txt);
        tls_set_err(t, "TLS error: %s", txt);
        return TETHER_ETLS;
    }
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        return tls_alert_error(t, reason - SSL_AD_REASON_OFFSET);
    }
    switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        if (!(t->flags & TF_VERIFY_ERR)) {
            long vr = SSL_get_verify_result(t->ssl);
            tls_set_err(t, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        }
        return TETHER_ECERT;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        tls_set_err(t, "client certificate required, but the client sent none");
        return TETHER_ECERTREQUIRED;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_WRONG_SSL_VERSION:
        tls_set_err(t, "no TLS version in common with the peer (we accept %s to %s)",
                    version_name(t->cfg->min_version), version_name(t->cfg->max_version));
        return TETHER_ENOSHARED;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_CIPHERS_AVAILABLE:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
        tether__tls_err_text(e, txt, sizeof txt);
        tls_set_err(t, "no cipher suite in common with the peer (%s)", txt);
        return TETHER_ENOSHARED;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        tls_set_err(t, "ALPN mismatch: the client offered none of our protocols (%s)",
                    t->cfg->alpn_text != NULL ? t->cfg->alpn_text : "none");
        return TETHER_EALPN;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
        if (hs) {
            tether__tls_err_text(e, txt, sizeof txt);
            tls_set_err(t, "the peer does not speak TLS (%s)", txt);
            return TETHER_ENOTTLS;
        }
        break;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        goto eof;
    default:
        break;
    }
    tether__tls_err_text(e, txt, sizeof txt);
    tls_set_err(t, "TLS %s: %s", hs ? "handshake failed" : "error", txt);
    return TETHER_ETLS;

eof:
    if (hs) {
        if (t->nfirst == 0 && (t->flags & TF_SERVER)) {
            tls_set_err(t, "the client closed the connection before sending anything%s",
                        not_tls_hint(t));
        } else {
            tls_set_err(t, "the peer closed the connection during the TLS handshake%s%s",
                        t->nfirst == 0 ? " without answering" : "",
                        t->nfirst == 0 ? not_tls_hint(t) : "");
        }
        return TETHER_ETLS;
    }
    tls_set_err(t, "TLS stream truncated: the peer closed the connection without close_notify");
    return TETHER_ETRUNCATED;
}

/* ---- the socket BIO ---------------------------------------------------- */

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *data, int len)
{
    struct tls_transport *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do {
        n = send(t->base.fd, data, (size_t)len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            BIO_set_retry_write(b);
        } else {
            t->sys_errno = (int16_t)errno;
        }
        return -1;
    }
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct tls_transport *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do {
        n = recv(t->base.fd, buf, (size_t)len, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (t->nfirst < TLS_FIRST_MAX) {
            size_t k = TETHER__MIN((size_t)n, (size_t)(TLS_FIRST_MAX - t->nfirst));
            memcpy(t->first + t->nfirst, buf, k);
            t->nfirst = (uint8_t)(t->nfirst + k);
        }
        return (int)n;
    }
    if (n == 0) {
        t->flags |= TF_EOF;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_read(b);
    } else {
        t->sys_errno = (int16_t)errno;
    }
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    struct tls_transport *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return t != NULL && (t->flags & TF_EOF) ? 1 : 0;
    case BIO_C_GET_FD:
        if (t == NULL) {
            return -1;
        }
        if (ptr != NULL) {
            *(int *)ptr = t->base.fd;
        }
        return t->base.fd;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    BIO_METHOD *m = BIO_meth_new(type, "tether socket");
    if (m == NULL) {
        return;
    }
    g_bio_type = type;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    g_bio_method = m;
}

/* ---- per-thread staging buffer ----------------------------------------- */

static pthread_key_t g_stage_key;
static pthread_once_t g_stage_once = PTHREAD_ONCE_INIT;
static _Thread_local uint8_t *t_stage;

static void stage_key_init(void)
{
    pthread_key_create(&g_stage_key, free);
}

static uint8_t *stage_buf(void)
{
    if (TETHER__LIKELY(t_stage != NULL)) {
        return t_stage;
    }
    pthread_once(&g_stage_once, stage_key_init);
    uint8_t *b = malloc(TETHER__TLS_RECORD);
    if (b != NULL) {
        /* The key's destructor frees it when the thread exits. */
        pthread_setspecific(g_stage_key, b);
        t_stage = b;
    }
    return b;
}

/* ---- callbacks from OpenSSL -------------------------------------------- */

int tether__tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_transport *t = tls_of(ssl);
    if (t == NULL || (t->flags & TF_SERVER) || t->key == NULL || t->cfg->no_resumption) {
        return 0;
    }
    tether__tls_cache_put(t->cfg, t->key, sess);
    return 1; /* the cache keeps the reference */
}

int tether__tls_client_cert_cb(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    (void)x509;
    (void)pkey;
    /* Called only when the server asks for a certificate and none is
     * configured: remember it, to explain the server's refusal. */
    struct tls_transport *t = tls_of(ssl);
    if (t != NULL) {
        t->flags |= TF_CERT_REQUESTED;
    }
    return 0;
}

int tether__tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                               const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const tether_tls_config *cfg = arg;
    unsigned char *sel = NULL;
    /* Server preference: the first of our protocols that the client offers. */
    if (SSL_select_next_proto(&sel, outlen, cfg->alpn, cfg->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

int tether__tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct tether__tls_gen *g = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    for (size_t i = 0; i < g->nsni; i++) {
        if (X509_check_host(g->sni[i].leaf, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, g->sni[i].ctx);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

/* ---- transport operations ---------------------------------------------- */

/* Clients: notes the server's CertificateRequest and the first message it
 * sends after the handshake (a TLS 1.3 session ticket), for
 * tls_await_verdict(). Removed once the handshake is complete, since
 * OpenSSL calls it for every record. */
static void tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg)
{
    (void)version;
    (void)arg;
    if (write_p || content_type != SSL3_RT_HANDSHAKE || len == 0) {
        return;
    }
    struct tls_transport *t = tls_of(ssl);
    if (t == NULL) {
        return;
    }
    uint8_t type = ((const uint8_t *)buf)[0];
    if (type == SSL3_MT_CERTIFICATE_REQUEST) {
        t->flags |= TF_CR_SEEN;
    } else if (type == SSL3_MT_NEWSESSION_TICKET) {
        t->flags |= TF_POST_HS;
    }
}

/* TLS 1.3 clients that were asked for a certificate: the server judges it
 * after our side of the handshake is done, and says so with its first
 * message: an alert that refuses it, or session tickets (or data) once it
 * has accepted it. Until then the connection is not reported up, so that a
 * refusal fails the handshake as it does with TLS 1.2 instead of closing a
 * connection that on_connect called established. TETHER_OK once the
 * server has accepted, TETHER_EAGAIN while waiting, or the refusal. */
static int tls_await_verdict(struct tls_transport *t)
{
    if ((t->flags & (TF_SERVER | TF_CR_SEEN)) != TF_CR_SEEN || t->cfg->no_client_cert_wait ||
        SSL_version(t->ssl) < TLS1_3_VERSION || (t->flags & TF_POST_HS)) {
        return TETHER_OK;
    }
    uint8_t b;
    ERR_clear_error();
    int r = SSL_peek(t->ssl, &b, 1);
    if (r > 0 || (t->flags & TF_POST_HS)) {
        return TETHER_OK; /* data (kept for the first read) or a ticket */
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        t->hs_want = e == SSL_ERROR_WANT_READ ? TETHER_EV_READ : TETHER_EV_WRITE;
        return TETHER_EAGAIN;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        return TETHER_OK; /* accepted, then closed: the first read says so */
    }
    return tls_fail(t, e);
}

static int tls_handshake(struct tether_transport *tr, bool *done)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    *done = false;
    if (t->flags & TF_HS_DONE) {
        *done = true;
        return TETHER_OK;
    }
    if (!(t->flags & TF_OWN_DONE)) {
        ERR_clear_error();
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                t->hs_want = TETHER_EV_READ;
                return TETHER_EAGAIN;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                t->hs_want = TETHER_EV_WRITE;
                return TETHER_EAGAIN;
            }
            return tls_fail(t, e);
        }
        t->hs_want = 0;
        if (!(t->flags & TF_SERVER) && t->cfg->alpn != NULL) {
            const unsigned char *p = NULL;
            unsigned int pl = 0;
            SSL_get0_alpn_selected(t->ssl, &p, &pl);
            if (pl == 0) {
                tls_set_err(t, "ALPN mismatch: the server selected none of our protocols (%s)",
                            t->cfg->alpn_text);
                return TETHER_EALPN;
            }
        }
        t->flags |= TF_OWN_DONE;
    }
    int rv = tls_await_verdict(t);
    if (rv != TETHER_OK) {
        return rv;
    }
    t->hs_want = 0;
    if (!(t->flags & TF_SERVER)) {
        SSL_set_msg_callback(t->ssl, NULL);
    }
    t->flags |= TF_HS_DONE;
    /* The SNI certificates are only needed while handshaking. */
    tether__tls_gen_unref(t->gen);
    t->gen = NULL;
    *done = true;
    return TETHER_OK;
}

static int tls_readv(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                     size_t *nread)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    (void)iovcnt;
    *nread = 0;
    if (t->deferred != 0) {
        return t->deferred;
    }
    if (t->flags & TF_RD_CLOSED) {
        /* The close_notify that came with the data of the previous call:
         * the end of the stream. */
        return TETHER_OK;
    }
    uint8_t *p = iov[0].iov_base;
    size_t cap = iov[0].iov_len;
    size_t got = 0;
    t->flags &= (uint16_t) ~(TF_RD_DRAINED | TF_RD_WANTS_W);
    while (got < cap) {
        int want = cap - got > INT_MAX ? INT_MAX : (int)(cap - got);
        ERR_clear_error();
        int r = SSL_read(t->ssl, p + got, want);
        if (r > 0) {
            got += (size_t)r;
            if (!SSL_has_pending(t->ssl)) {
                /* OpenSSL holds nothing more; whatever the socket still has
                 * is reported by epoll. */
                break;
            }
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            t->flags |= TF_RD_DRAINED;
            break;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            t->flags |= TF_RD_WANTS_W;
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: a clean end of stream (0 bytes) once the data
             * before it has been delivered. If it came in the same read as
             * that data, OpenSSL has consumed it and epoll will never
             * report it again (the peer may well wait for our answer
             * without sending a FIN): remember it, and has_pending() makes
             * the connection come back for the end of the stream. */
            if (got > 0) {
                t->flags |= TF_RD_CLOSED;
            }
            break;
        }
        int rv = tls_fail(t, e);
        if (got > 0) {
            t->deferred = (int8_t)rv;
            break;
        }
        return rv;
    }
    *nread = got;
    if (got == 0 && (t->flags & (TF_RD_DRAINED | TF_RD_WANTS_W))) {
        return TETHER_EAGAIN;
    }
    return TETHER_OK;
}

/* After a write failed because the peer reset the connection, looks for an
 * alert it sent before closing (a TLS 1.3 server rejecting our certificate
 * after our side of the handshake had finished): that is the real reason.
 * Returns its code, or 0 if there is none. */
static int tls_probe_alert(struct tls_transport *t)
{
    char b;
    ERR_clear_error();
    int r = SSL_peek(t->ssl, &b, 1);
    int rv = 0;
    if (r <= 0 && SSL_get_error(t->ssl, r) == SSL_ERROR_SSL) {
        unsigned long x = ERR_peek_last_error();
        int reason = ERR_GET_REASON(x);
        if (ERR_GET_LIB(x) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET &&
            reason < SSL_AD_REASON_OFFSET + 256) {
            rv = tls_alert_error(t, reason - SSL_AD_REASON_OFFSET);
        }
    }
    ERR_clear_error();
    return rv;
}

/* One SSL_write of at most one record: TETHER_OK with *acc bytes accepted,
 * TETHER_EAGAIN when OpenSSL needs the socket (wpend is set: the next call
 * must present at least these n bytes again), or an error. */
static int tls_write_one(struct tls_transport *t, const uint8_t *buf, size_t n, size_t *acc)
{
    ERR_clear_error();
    int r = SSL_write(t->ssl, buf, (int)n);
    if (r > 0) {
        t->wpend = 0;
        *acc = (size_t)r;
        return TETHER_OK;
    }
    *acc = 0;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        if (e == SSL_ERROR_WANT_READ) {
            t->flags |= TF_WR_WANTS_R;
        }
        t->wpend = (uint16_t)n;
        return TETHER_EAGAIN;
    }
    int rv = tls_fail(t, e);
    if (rv == TETHER_ECONNRESET && (t->flags & TF_HS_DONE)) {
        int arv = tls_probe_alert(t);
        if (arv != 0) {
            rv = arv;
        }
    }
    return rv;
}

static int tls_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    *nwritten = 0;
    if (t->deferred != 0) {
        return t->deferred;
    }
    t->flags &= (uint16_t)~TF_WR_WANTS_R;
    size_t done = 0;
    int i = 0;
    size_t off = 0; /* position inside iov[i] */
    int rv = TETHER_OK;
    for (;;) {
        while (i < iovcnt && iov[i].iov_len == off) {
            i++;
            off = 0;
        }
        if (i == iovcnt) {
            break;
        }
        const uint8_t *cur = (const uint8_t *)iov[i].iov_base + off;
        size_t curlen = iov[i].iov_len - off;
        bool more = false;
        for (int j = i + 1; j < iovcnt && !more; j++) {
            more = iov[j].iov_len > 0;
        }
        size_t acc = 0;
        if (curlen >= TETHER__TLS_RECORD || (!more && curlen >= t->wpend)) {
            /* A full record straight from the caller's memory. */
            rv = tls_write_one(t, cur, TETHER__MIN(curlen, (size_t)TETHER__TLS_RECORD), &acc);
        } else {
            /* Gather small pieces into one full record. */
            uint8_t *st = stage_buf();
            if (st == NULL) {
                rv = TETHER_ENOMEM;
                tls_set_err(t, "out of memory for the TLS staging buffer");
                break;
            }
            size_t n = 0;
            int gi = i;
            size_t goff = off;
            while (n < TETHER__TLS_RECORD && gi < iovcnt) {
                size_t k = TETHER__MIN(iov[gi].iov_len - goff, TETHER__TLS_RECORD - n);
                memcpy(st + n, (const uint8_t *)iov[gi].iov_base + goff, k);
                n += k;
                goff += k;
                if (goff == iov[gi].iov_len) {
                    gi++;
                    goff = 0;
                }
            }
            rv = tls_write_one(t, st, n, &acc);
        }
        if (rv != TETHER_OK) {
            break;
        }
        done += acc;
        /* Advance the cursor by what OpenSSL accepted. */
        while (acc > 0) {
            size_t k = TETHER__MIN(acc, iov[i].iov_len - off);
            off += k;
            acc -= k;
            if (off == iov[i].iov_len && acc > 0) {
                i++;
                off = 0;
            }
        }
    }
    if (done > 0) {
        if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
            t->deferred = (int8_t)rv; /* report after the bytes that did go */
        }
        *nwritten = done;
        return TETHER_OK;
    }
    return rv == TETHER_OK ? TETHER_EAGAIN : rv;
}

static unsigned tls_want_events(const struct tether_transport *tr)
{
    const struct tls_transport *t = (const struct tls_transport *)tr;
    if (!(t->flags & TF_HS_DONE)) {
        return t->hs_want;
    }
    unsigned ev = t->sd_want;
    if (t->flags & TF_RD_WANTS_W) {
        ev |= TETHER_EV_WRITE;
    }
    if (t->flags & TF_WR_WANTS_R) {
        ev |= TETHER_EV_READ;
    }
    return ev;
}

static bool tls_has_pending(const struct tether_transport *tr)
{
    const struct tls_transport *t = (const struct tls_transport *)tr;
    if (t->ssl == NULL || !(t->flags & TF_HS_DONE) || t->deferred != 0) {
        return false;
    }
    if (t->flags & TF_RD_CLOSED) {
        return true; /* the end of the stream, which epoll cannot see */
    }
    if (SSL_pending(t->ssl) > 0) {
        return true;
    }
    /* Read-ahead may hold more records; after WANT_READ what it holds is
     * an incomplete record that needs the socket. */
    return !(t->flags & TF_RD_DRAINED) && SSL_has_pending(t->ssl);
}

static int tls_shutdown(struct tether_transport *tr, bool *done)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    *done = false;
    if (t->flags & TF_HS_DONE) {
        ERR_clear_error();
        int r = SSL_shutdown(t->ssl);
        if (r < 0) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                t->sd_want = TETHER_EV_WRITE;
                return TETHER_EAGAIN;
            }
            if (e == SSL_ERROR_WANT_READ) {
                t->sd_want = TETHER_EV_READ;
                return TETHER_EAGAIN;
            }
            t->sd_want = 0;
            *done = true;
            return tls_fail(t, e);
        }
    }
    /* close_notify is out: end the TCP stream too, as a plain connection
     * would, and let the connection drain the peer's remaining input. */
    t->sd_want = 0;
    *done = true;
    if (shutdown(tr->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
        t->sys_errno = (int16_t)errno;
        tls_set_err(t, "shutdown: %s", strerror(errno));
        return tether__errno_to_err(errno);
    }
    return TETHER_OK;
}

static void tls_destroy(struct tether_transport *tr)
{
    struct tls_transport *t = (struct tls_transport *)tr;
    if (t->ssl != NULL) {
        if ((t->flags & TF_HS_DONE) && t->deferred == 0 &&
            SSL_get_shutdown(t->ssl) == SSL_RECEIVED_SHUTDOWN) {
            /* The peer said close_notify and we are closing without having
             * answered: answer, best effort, so that its read ends cleanly. */
            ERR_clear_error();
            SSL_shutdown(t->ssl);
        }
        SSL_free(t->ssl); /* frees the BIO too */
    }
    ERR_clear_error();
    if (tr->fd >= 0) {
        close(tr->fd);
    }
    tether__tls_gen_unref(t->gen);
    tether_tls_config_unref(t->cfg);
    free(t->key);
    free(t->err);
    free(t);
}

static const char *tls_last_error(const struct tether_transport *tr)
{
    const struct tls_transport *t = (const struct tls_transport *)tr;
    return t->err;
}

static const struct tether_transport_ops tls_ops = {
    .name = "tls",
    .handshake = tls_handshake,
    .readv = tls_readv,
    .writev = tls_writev,
    .want_events = tls_want_events,
    .has_pending = tls_has_pending,
    .shutdown = tls_shutdown,
    .destroy = tls_destroy,
    .last_error = tls_last_error,
};

/* ---- creation ---------------------------------------------------------- */

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Client set-up: SNI, what to verify, and a session to resume. */
static int tls_client_setup(struct tls_transport *t, const char *host)
{
    tether_tls_config *cfg = t->cfg;
    const char *name = cfg->server_name != NULL ? cfg->server_name : host;
    if (name == NULL || name[0] == '\0') {
        tls_set_err(t, "no host name to verify the server's certificate against");
        return TETHER_EINVAL;
    }
    bool ip = is_ip_literal(name);
    if (!ip && SSL_set_tlsext_host_name(t->ssl, name) != 1) {
        tls_set_err(t, "invalid server name '%s'", name);
        return TETHER_EINVAL;
    }
    if (cfg->insecure) {
        /* Nothing is verified, but a verify hook must still be able to
         * refuse: OpenSSL ignores a failed verification under
         * SSL_VERIFY_NONE, and tls_peer.c's callback accepts whatever the
         * hook accepts. */
        SSL_set_verify(t->ssl, cfg->verify_cb != NULL ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       cfg->verify_cb != NULL ? tls_verify_cb : NULL);
    } else {
        X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
        X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok =
            ip ? X509_VERIFY_PARAM_set1_ip_asc(p, name) : X509_VERIFY_PARAM_set1_host(p, name, 0);
        if (ok != 1) {
            tls_set_err(t, "cannot verify against the name '%s'", name);
            return TETHER_EINVAL;
        }
        SSL_set_verify(t->ssl, SSL_VERIFY_PEER, tls_verify_cb);
    }
    if (!cfg->no_resumption) {
        /* Sessions are resumed per target: the host as dialled, the port
         * and the name verified. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int port = 0;
        if (getpeername(t->base.fd, (struct sockaddr *)&ss, &sl) == 0) {
            port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        size_t kl = strlen(host != NULL ? host : "") + strlen(name) + 16;
        t->key = malloc(kl);
        if (t->key == NULL) {
            return TETHER_ENOMEM;
        }
        snprintf(t->key, kl, "%s:%d|%s", host != NULL ? host : "", port, name);
        SSL_SESSION *s = tether__tls_cache_get(cfg, t->key);
        if (s != NULL) {
            SSL_set_session(t->ssl, s);
            SSL_SESSION_free(s);
        }
    }
    if (!cfg->no_client_cert_wait) {
        SSL_set_msg_callback(t->ssl, tls_msg_cb);
    }
    SSL_set_connect_state(t->ssl);
    return TETHER_OK;
}

static void tls_server_setup(struct tls_transport *t)
{
    int mode = SSL_VERIFY_NONE;
    if (t->cfg->client_auth == TETHER_TLS_CLIENT_AUTH_OPTIONAL) {
        mode = SSL_VERIFY_PEER;
    } else if (t->cfg->client_auth == TETHER_TLS_CLIENT_AUTH_REQUIRED) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_set_verify(t->ssl, mode, mode != SSL_VERIFY_NONE ? tls_verify_cb : NULL);
    SSL_set_accept_state(t->ssl);
}

int tether__tls_transport_new(struct tether_transport **out, tether_tls_config *cfg, int fd,
                              const char *host, bool server)
{
    *out = NULL;
    pthread_once(&g_bio_once, bio_method_init);
    struct tls_transport *t = calloc(1, sizeof *t);
    if (t == NULL || g_bio_method == NULL) {
        free(t);
        close(fd);
        return TETHER_ENOMEM;
    }
    t->base.ops = &tls_ops;
    t->base.fd = fd;
    t->cfg = tether_tls_config_ref(cfg);
    t->gen = tether__tls_gen_get(cfg);
    if (server) {
        t->flags |= TF_SERVER;
    }
    int rv = TETHER_OK;
    BIO *bio = NULL;
    t->ssl = SSL_new(t->gen->ctx);
    if (t->ssl != NULL) {
        bio = BIO_new(g_bio_method);
    }
    if (t->ssl == NULL || bio == NULL) {
        ERR_clear_error();
        rv = TETHER_ENOMEM;
    } else {
        BIO_set_data(bio, t);
        SSL_set_bio(t->ssl, bio, bio);
        if (server) {
            tls_server_setup(t);
        } else {
            rv = tls_client_setup(t, host);
        }
    }
    if (rv != TETHER_OK) {
        tls_destroy(&t->base); /* closes fd */
        return rv;
    }
    *out = &t->base;
    return TETHER_OK;
}

/* ---- for tls_peer.c ----------------------------------------------------- */

int tether__tls_transport_get(const struct tether_transport *tr, struct tls_transport **out)
{
    *out = NULL;
    if (tr == NULL || tr->ops != &tls_ops) {
        return TETHER_ENOTSUP;
    }
    struct tls_transport *t = (struct tls_transport *)tr;
    if (!(t->flags & TF_HS_DONE)) {
        return TETHER_ENOTCONN;
    }
    *out = t;
    return TETHER_OK;
}
