/* SPDX-License-Identifier: MIT */
/* What a failed TLS handshake, read or write means, for the TLS transport
 * (transport_tls.c): a failed SSL call is classified into a specific code
 * (see tls.h in include/) with a detail string that names the reason. The
 * verify callback records which certificate failed and why; alerts the peer
 * sent are translated into what it meant; a peer whose first bytes cannot
 * start a TLS record is named as not speaking TLS (plain TCP, HTTP). */
#include "tls_transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* ---- error details ----------------------------------------------------- */

/* The SSL ex_data index of the detail; -1 if OpenSSL was out of memory
 * (no detail is recorded then, as when its buffer cannot be allocated). */
static pthread_once_t g_err_idx_once = PTHREAD_ONCE_INIT;
static int g_err_idx = -1;

static void err_idx_init(void)
{
    g_err_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

char *tether__tls_err(const struct tls_transport *t)
{
    pthread_once(&g_err_idx_once, err_idx_init);
    return g_err_idx >= 0 && t->ssl != NULL ? SSL_get_ex_data(t->ssl, g_err_idx) : NULL;
}

void tether__tls_err_free(struct tls_transport *t)
{
    char *e = tether__tls_err(t);
    if (e != NULL) {
        SSL_set_ex_data(t->ssl, g_err_idx, NULL);
        free(e);
    }
}

void tether__tls_set_err(struct tls_transport *t, const char *fmt, ...)
{
    pthread_once(&g_err_idx_once, err_idx_init);
    char *e = tether__tls_err(t);
    if (e == NULL) {
        if (g_err_idx < 0 || t->ssl == NULL || (e = malloc(TETHER_ERROR_MSG_MAX)) == NULL) {
            return;
        }
        if (SSL_set_ex_data(t->ssl, g_err_idx, e) != 1) {
            ERR_clear_error();
            free(e);
            return;
        }
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e, TETHER_ERROR_MSG_MAX, fmt, ap);
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
int tether__tls_verify_cb(int ok, X509_STORE_CTX *sctx)
{
    if (ok) {
        return ok;
    }
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_transport *t = ssl != NULL ? tether__tls_of(ssl) : NULL;
    if (t == NULL || (t->base.flags & TF_VERIFY_ERR)) {
        return ok;
    }
    t->base.flags |= TF_VERIFY_ERR;
    int e = X509_STORE_CTX_get_error(sctx);
    X509 *x = X509_STORE_CTX_get_current_cert(sctx);
    const char *who = (t->base.flags & TF_SERVER) ? "client" : "server";
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
        tether__tls_set_err(
            t,
            "certificate verify failed: unknown CA: the %s certificate '%s' is issued "
            "by '%s', which is not trusted",
            who, subj, iss);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        tether__tls_set_err(t,
                            "certificate verify failed: unknown CA: the %s certificate '%s' is "
                            "self-signed and not trusted",
                            who, subj);
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        asn1_time_text(X509_get0_notAfter(x), when, sizeof when);
        tether__tls_set_err(t,
                            "certificate verify failed: the %s certificate '%s' has expired (%s)",
                            who, subj, when);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        asn1_time_text(X509_get0_notBefore(x), when, sizeof when);
        tether__tls_set_err(t,
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
        tether__tls_set_err(t,
                            "certificate verify failed: %s mismatch: the server certificate is not "
                            "valid for '%s' (it is for %s)",
                            e == X509_V_ERR_HOSTNAME_MISMATCH ? "host name" : "IP address",
                            want[0] != '\0' ? want : "?", sans[0] != '\0' ? sans : subj);
        break;
    }
    default:
        tether__tls_set_err(t, "certificate verify failed: %s (%s certificate '%s')",
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
    bool server = (t->base.flags & TF_SERVER) != 0;
    switch (alert) {
    case SSL_AD_CERTIFICATE_REQUIRED:
        tether__tls_set_err(t, "the server requires a client certificate%s",
                            (t->base.flags & TF_CERT_REQUESTED) ? " (none is configured)" : "");
        return TETHER_ECERTREQUIRED;
    case SSL_AD_HANDSHAKE_FAILURE:
        if (!server && (t->base.flags & TF_CERT_REQUESTED)) {
            tether__tls_set_err(t, "the server requires a client certificate (none is configured)");
            return TETHER_ECERTREQUIRED;
        }
        tether__tls_set_err(
            t, "no cipher suite in common: the peer aborted the handshake (alert '%s')", desc);
        return TETHER_ENOSHARED;
    case SSL_AD_PROTOCOL_VERSION:
        tether__tls_set_err(t,
                            "no TLS version in common: the peer rejected ours (we accept %s to %s; "
                            "alert '%s')",
                            version_name(tether__tls_cfg(t)->min_version),
                            version_name(tether__tls_cfg(t)->max_version), desc);
        return TETHER_ENOSHARED;
    case SSL_AD_INSUFFICIENT_SECURITY:
        tether__tls_set_err(t, "no cipher suite in common that the peer accepts (alert '%s')",
                            desc);
        return TETHER_ENOSHARED;
    case SSL_AD_NO_APPLICATION_PROTOCOL:
        tether__tls_set_err(t, "ALPN mismatch: the peer supports none of our protocols (%s)",
                            tether__tls_cfg(t)->alpn_text != NULL ? tether__tls_cfg(t)->alpn_text
                                                                  : "we offered none");
        return TETHER_EALPN;
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_ACCESS_DENIED:
        tether__tls_set_err(t, "the %s rejected our certificate (alert '%s')",
                            server ? "client" : "server", desc);
        return TETHER_ECERT;
    case SSL_AD_UNRECOGNIZED_NAME:
        tether__tls_set_err(t, "the server does not serve the name we asked for (SNI; alert '%s')",
                            desc);
        return TETHER_ETLS;
    default:
        tether__tls_set_err(t, "the peer ended the TLS session with alert '%s'", desc);
        return TETHER_ETLS;
    }
}

/* What a peer that sent nothing during the handshake probably is: a client
 * suspects a server that does not speak TLS; a server suspects a port check
 * (a health probe, a scanner) rather than a TLS client. */
static const char *not_tls_hint(const struct tls_transport *t)
{
    return (t->base.flags & TF_SERVER) ? " (a port check or health probe, or not a TLS client?)"
                                  : " (is it a TLS server?)";
}

/* Classifies a failed SSL call. Called with the OpenSSL error queue of that
 * call; leaves it empty. */
int tether__tls_fail(struct tls_transport *t, int ssl_err)
{
    bool hs = !(t->base.flags & TF_HS_DONE);
    unsigned long e = ERR_peek_last_error();
    int lib = ERR_GET_LIB(e);
    int reason = ERR_GET_REASON(e);
    int rv;
    char txt[160];
    ERR_clear_error();

    if (hs && t->nfirst > 0 && !looks_like_tls(t->first, t->nfirst)) {
        first_bytes_text(t, txt, sizeof txt);
        tether__tls_set_err(t, "the peer does not speak TLS (it sent %s)", txt);
        return TETHER_ENOTTLS;
    }
    if (ssl_err == SSL_ERROR_SYSCALL || (e != 0 && lib == ERR_LIB_SYS)) {
        int se = t->base.last_errno != 0 ? t->base.last_errno : (lib == ERR_LIB_SYS ? reason : 0);
        if (se == 0) {
            /* End of stream without an error (OpenSSL 1.1 style). */
            goto eof;
        }
        rv = tether__errno_to_err(se);
        if (rv == TETHER_ECONNRESET) {
            tether__tls_set_err(t, "connection reset by peer%s%s",
                                !hs              ? ""
                                : t->nfirst == 0 ? " during the TLS handshake, before any TLS data "
                                                   "arrived"
                                                 : " during the TLS handshake",
                                hs && t->nfirst == 0 ? not_tls_hint(t) : "");
        } else {
            tether__tls_set_err(t, "%s%s", strerror(se), hs ? " during the TLS handshake" : "");
        }
        return rv;
    }
    if (lib != ERR_LIB_SSL) {
        tether__tls_err_text(e, txt, sizeof txt);
        tether__tls_set_err(t, "TLS error: %s", txt);
        return TETHER_ETLS;
    }
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        return tls_alert_error(t, reason - SSL_AD_REASON_OFFSET);
    }
    switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        if (!(t->base.flags & TF_VERIFY_ERR)) {
            long vr = SSL_get_verify_result(t->ssl);
            tether__tls_set_err(t, "certificate verify failed: %s",
                                X509_verify_cert_error_string(vr));
        }
        return TETHER_ECERT;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        tether__tls_set_err(t, "client certificate required, but the client sent none");
        return TETHER_ECERTREQUIRED;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_WRONG_SSL_VERSION:
        tether__tls_set_err(t, "no TLS version in common with the peer (we accept %s to %s)",
                            version_name(tether__tls_cfg(t)->min_version),
                            version_name(tether__tls_cfg(t)->max_version));
        return TETHER_ENOSHARED;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_CIPHERS_AVAILABLE:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
        tether__tls_err_text(e, txt, sizeof txt);
        tether__tls_set_err(t, "no cipher suite in common with the peer (%s)", txt);
        return TETHER_ENOSHARED;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        tether__tls_set_err(t, "ALPN mismatch: the client offered none of our protocols (%s)",
                            tether__tls_cfg(t)->alpn_text != NULL ? tether__tls_cfg(t)->alpn_text
                                                                  : "none");
        return TETHER_EALPN;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
        if (hs) {
            tether__tls_err_text(e, txt, sizeof txt);
            tether__tls_set_err(t, "the peer does not speak TLS (%s)", txt);
            return TETHER_ENOTTLS;
        }
        break;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        goto eof;
    default:
        break;
    }
    tether__tls_err_text(e, txt, sizeof txt);
    tether__tls_set_err(t, "TLS %s: %s", hs ? "handshake failed" : "error", txt);
    return TETHER_ETLS;

eof:
    if (hs) {
        if (t->nfirst == 0 && (t->base.flags & TF_SERVER)) {
            tether__tls_set_err(t, "the client closed the connection before sending anything%s",
                                not_tls_hint(t));
        } else {
            tether__tls_set_err(t, "the peer closed the connection during the TLS handshake%s%s",
                                t->nfirst == 0 ? " without answering" : "",
                                t->nfirst == 0 ? not_tls_hint(t) : "");
        }
        return TETHER_ETLS;
    }
    tether__tls_set_err(
        t, "TLS stream truncated: the peer closed the connection without close_notify");
    return TETHER_ETRUNCATED;
}

/* After a write failed because the peer reset the connection, looks for an
 * alert it sent before closing (a TLS 1.3 server rejecting our certificate
 * after our side of the handshake had finished): that is the real reason.
 * Returns its code, or 0 if there is none. */
int tether__tls_probe_alert(struct tls_transport *t)
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
