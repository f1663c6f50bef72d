/* SPDX-License-Identifier: MIT */
/* What the application learns about a TLS peer, on the TLS side: the
 * details behind tether_conn_tls_info() (truncation included), the peer
 * certificate in DER or PEM and the SSL for tether/openssl.h (conn_tls.c
 * and conn.c check the connection's state first), and the verify hook
 * (tether_tls_opts::verify_cb), which OpenSSL calls during the handshake
 * through tether__tls_cert_verify_cb(). The transport itself (handshake,
 * I/O) is transport_tls.c, its error classification tls_errors.c. */
#include "tls_transport.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* ---- text of names ------------------------------------------------------ */

bool tether__tls_name_rfc2253(const X509_NAME *n, char *buf, size_t len)
{
    if (len == 0) {
        return n != NULL;
    }
    buf[0] = '\0';
    if (n == NULL) {
        return false;
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL) {
        return false;
    }
    X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    int n_read = BIO_read(b, buf, (int)len - 1);
    buf[n_read > 0 ? n_read : 0] = '\0';
    bool cut = BIO_pending(b) > 0;
    BIO_free(b);
    return cut;
}

/* Appends ",TYPE:value" (no comma first) to buf; false if it did not fit,
 * in which case buf keeps only the entries before it. */
static bool sans_append(char *buf, size_t len, size_t *used, const char *type, const char *v,
                        int vlen)
{
    int n = snprintf(buf + *used, len - *used, "%s%s:%.*s", *used > 0 ? "," : "", type, vlen, v);
    if (n < 0 || (size_t)n >= len - *used) {
        buf[*used] = '\0'; /* whole entries only */
        return false;
    }
    *used += (size_t)n;
    return true;
}

bool tether__tls_format_sans(X509 *x, char *buf, size_t len)
{
    if (len == 0) {
        return true;
    }
    buf[0] = '\0';
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL) {
        return false;
    }
    size_t used = 0;
    bool cut = false;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens) && !cut; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS || g->type == GEN_EMAIL || g->type == GEN_URI) {
            const ASN1_IA5STRING *s = g->d.ia5;
            const char *pfx = g->type == GEN_DNS ? "DNS" : g->type == GEN_EMAIL ? "email" : "URI";
            cut = !sans_append(buf, len, &used, pfx, (const char *)ASN1_STRING_get0_data(s),
                               ASN1_STRING_length(s));
        } else if (g->type == GEN_IPADD) {
            const ASN1_OCTET_STRING *ip = g->d.ip;
            int l = ASN1_STRING_length(ip);
            char a[INET6_ADDRSTRLEN];
            if ((l == 4 || l == 16) &&
                inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), a, sizeof a)) {
                cut = !sans_append(buf, len, &used, "IP", a, (int)strlen(a));
            }
        }
    }
    GENERAL_NAMES_free(gens);
    return cut;
}

void tether__tls_expected_name(SSL *ssl, char *buf, size_t len)
{
    buf[0] = '\0';
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    const char *h = X509_VERIFY_PARAM_get0_host(p, 0);
    if (h != NULL) {
        snprintf(buf, len, "%s", h);
        return;
    }
    char *ip = X509_VERIFY_PARAM_get1_ip_asc(p);
    if (ip != NULL) {
        snprintf(buf, len, "%s", ip);
        OPENSSL_free(ip);
    }
}

/* ---- what a connection negotiated --------------------------------------- */

int tether__tls_transport_info(const struct tether_transport *tr, tether_tls_info *out)
{
    struct tls_transport *t;
    int rv = tether__tls_transport_get(tr, &t);
    if (rv != TETHER_OK) {
        return rv;
    }
    tether_tls_info *d = out;
    SSL *ssl = t->ssl;
    d->version = SSL_get_version(ssl);
    d->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
    d->resumed = SSL_session_reused(ssl) == 1;
    /* A group that only a provider defines has no NID (TLSEXT_nid_unknown
     * is set): OBJ_nid2sn() would fail and leave an error on the queue. */
    int gid = SSL_get_negotiated_group(ssl);
    const char *gname = gid > 0 && !(gid & TLSEXT_nid_unknown) ? OBJ_nid2sn(gid) : NULL;
    d->group = gname != NULL ? gname : "";
    /* ALPN and SNI are at most 255 bytes on the wire: they always fit. */
    const unsigned char *ap = NULL;
    unsigned int al = 0;
    SSL_get0_alpn_selected(ssl, &ap, &al);
    snprintf(d->alpn, sizeof d->alpn, "%.*s", (int)al, ap != NULL ? (const char *)ap : "");
    const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(d->server_name, sizeof d->server_name, "%s", sn != NULL ? sn : "");
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer != NULL) {
        d->has_peer_cert = true;
        bool verifying = (t->base.flags & TF_SERVER)
                             ? tether__tls_cfg(t)->client_auth != TETHER_TLS_CLIENT_AUTH_NONE
                             : !tether__tls_cfg(t)->insecure;
        d->peer_verified = verifying && SSL_get_verify_result(ssl) == X509_V_OK;
        const X509_NAME *subj = X509_get_subject_name(peer);
        if (tether__tls_name_rfc2253(subj, d->peer_subject, sizeof d->peer_subject)) {
            d->truncated |= TETHER_TLS_INFO_PEER_SUBJECT;
        }
        if (tether__tls_name_rfc2253(X509_get_issuer_name(peer), d->peer_issuer,
                                     sizeof d->peer_issuer)) {
            d->truncated |= TETHER_TLS_INFO_PEER_ISSUER;
        }
        /* With a NULL buffer this returns the length of the whole name. */
        int cn_len = X509_NAME_get_text_by_NID(subj, NID_commonName, NULL, 0);
        if (cn_len > 0) {
            X509_NAME_get_text_by_NID(subj, NID_commonName, d->peer_common_name,
                                      (int)sizeof d->peer_common_name);
            if ((size_t)cn_len >= sizeof d->peer_common_name) {
                d->truncated |= TETHER_TLS_INFO_PEER_COMMON_NAME;
            }
        }
        if (tether__tls_format_sans(peer, d->peer_sans, sizeof d->peer_sans)) {
            d->truncated |= TETHER_TLS_INFO_PEER_SANS;
        }
        ERR_clear_error();
    }
    return TETHER_OK;
}

/* ---- the peer certificate ------------------------------------------------ */

int tether__tls_transport_peer_cert(const struct tether_transport *tr,
                                    tether_tls_cert_format format, void *buf, size_t cap,
                                    size_t *out_len)
{
    *out_len = 0;
    struct tls_transport *t;
    int rv = tether__tls_transport_get(tr, &t);
    if (rv != TETHER_OK) {
        return rv;
    }
    X509 *peer = SSL_get0_peer_certificate(t->ssl);
    if (peer == NULL) {
        return TETHER_OK; /* *out_len stays 0: nothing was presented */
    }
    if (format == TETHER_TLS_CERT_DER) {
        int n = i2d_X509(peer, NULL);
        if (n <= 0) {
            ERR_clear_error();
            return TETHER_ENOMEM;
        }
        *out_len = (size_t)n;
        if ((size_t)n > cap) {
            return TETHER_EMSGSIZE;
        }
        unsigned char *p = buf;
        i2d_X509(peer, &p);
        return TETHER_OK;
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL || PEM_write_bio_X509(b, peer) != 1) {
        BIO_free(b);
        ERR_clear_error();
        return TETHER_ENOMEM;
    }
    char *text = NULL;
    long n = BIO_get_mem_data(b, &text);
    *out_len = (size_t)n + 1;
    if (*out_len > cap) {
        BIO_free(b);
        return TETHER_EMSGSIZE;
    }
    memcpy(buf, text, (size_t)n);
    ((char *)buf)[n] = '\0';
    BIO_free(b);
    return TETHER_OK;
}

SSL *tether__tls_transport_ssl(const struct tether_transport *tr)
{
    struct tls_transport *t;
    return tether__tls_transport_get(tr, &t) == TETHER_OK ? t->ssl : NULL;
}

/* ---- the verify hook ----------------------------------------------------- */

/* The verification error that OpenSSL turns into each alert when a
 * certificate verify callback fails (ssl_x509err2alert() in OpenSSL's
 * ssl/statem/statem_lib.c); test_tls checks every pair on the wire. */
static int alert_to_x509_error(int alert)
{
    switch (alert) {
    case TETHER_TLS_ALERT_UNSUPPORTED_CERTIFICATE:
        return X509_V_ERR_INVALID_PURPOSE;
    case TETHER_TLS_ALERT_CERTIFICATE_REVOKED:
        return X509_V_ERR_CERT_REVOKED;
    case TETHER_TLS_ALERT_CERTIFICATE_EXPIRED:
        return X509_V_ERR_CERT_HAS_EXPIRED;
    case TETHER_TLS_ALERT_UNKNOWN_CA:
        return X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT;
    case TETHER_TLS_ALERT_BAD_CERTIFICATE:
    default:
        return X509_V_ERR_CERT_REJECTED;
    }
}

/* The certificates the peer sent, its own first, as DER. */
static int chain_der(X509_STORE_CTX *sctx, tether_tls_cert **out, size_t *out_n)
{
    STACK_OF(X509) *sent = X509_STORE_CTX_get0_untrusted(sctx);
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    /* OpenSSL hands the verification the whole list the peer sent, leaf
     * included; without one, the leaf alone. */
    int n = sent != NULL && sk_X509_num(sent) > 0 ? sk_X509_num(sent) : 1;
    tether_tls_cert *certs = calloc((size_t)n, sizeof *certs);
    if (certs == NULL) {
        return TETHER_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        X509 *x = sent != NULL && sk_X509_num(sent) > 0 ? sk_X509_value(sent, i) : leaf;
        unsigned char *der = NULL;
        int len = i2d_X509(x, &der);
        if (len <= 0) {
            for (int j = 0; j < i; j++) {
                OPENSSL_free((void *)certs[j].der);
            }
            free(certs);
            return TETHER_ENOMEM;
        }
        certs[i].der = der;
        certs[i].len = (size_t)len;
    }
    *out = certs;
    *out_n = (size_t)n;
    return TETHER_OK;
}

int tether__tls_cert_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    (void)arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_transport *t = ssl != NULL ? tether__tls_of(ssl) : NULL;
    /* OpenSSL's own verification first; tether__tls_verify_cb (tls_errors.c)
     * records the reason of a failure as it goes. */
    int ok = X509_verify_cert(sctx) > 0;
    if (t == NULL || tether__tls_cfg(t)->verify_cb == NULL) {
        return ok;
    }
    bool server = (t->base.flags & TF_SERVER) != 0;
    bool insecure = !server && tether__tls_cfg(t)->insecure;
    int verr = X509_STORE_CTX_get_error(sctx);

    tether_tls_verify_info vi;
    memset(&vi, 0, sizeof vi);
    vi.size = sizeof vi;
    vi.is_server = server;
    vi.preverified = ok && verr == X509_V_OK;
    vi.verify_error = vi.preverified ? X509_V_OK : verr;
    char why[TETHER_ERROR_MSG_MAX];
    if (vi.preverified) {
        snprintf(why, sizeof why, "ok");
    } else if ((t->base.flags & TF_VERIFY_ERR) && tether__tls_err(t) != NULL) {
        snprintf(why, sizeof why, "%s", tether__tls_err(t));
    } else {
        snprintf(why, sizeof why, "certificate verify failed: %s",
                 X509_verify_cert_error_string(vi.verify_error));
    }
    vi.verify_text = why;
    char name[256];
    if (server) {
        const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        snprintf(name, sizeof name, "%s", sn != NULL ? sn : "");
    } else {
        tether__tls_expected_name(ssl, name, sizeof name);
    }
    vi.server_name = name;
    tether_tls_cert *chain = NULL;
    if (chain_der(sctx, &chain, &vi.chain_len) != TETHER_OK) {
        tether__tls_set_err(t, "out of memory running the verify hook");
        t->base.flags |= TF_VERIFY_ERR | TF_HOOK_REJECT;
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_OUT_OF_MEM);
        return 0;
    }
    vi.chain = chain;

    char reason[TETHER_TLS_REASON_MAX];
    reason[0] = '\0';
    int verdict =
        tether__tls_cfg(t)->verify_cb(&vi, reason, sizeof reason, tether__tls_cfg(t)->verify_ud);
    /* The hook may have sent on, or closed, another TLS connection of this
     * loop, pointing the loop's shared socket BIO at it: the rest of this
     * handshake reads and writes t's socket again. */
    tether__tls_bind(t);
    reason[sizeof reason - 1] = '\0';
    for (size_t i = 0; i < vi.chain_len; i++) {
        OPENSSL_free((void *)chain[i].der);
    }
    free(chain);

    if (verdict != 0) {
        char subj[96];
        tether__tls_name_rfc2253(X509_get_subject_name(X509_STORE_CTX_get0_cert(sctx)), subj,
                                 sizeof subj);
        tether__tls_set_err(
            t, "certificate rejected by the verify hook: the %s certificate '%s': %s",
            server ? "client" : "server", subj, reason[0] != '\0' ? reason : "no reason given");
        t->base.flags |= TF_VERIFY_ERR | TF_HOOK_REJECT;
        X509_STORE_CTX_set_error(sctx, alert_to_x509_error(verdict));
        ERR_clear_error();
        return 0;
    }
    if (!vi.preverified && insecure) {
        /* insecure_skip_verify: the hook alone decides. The error stays
         * recorded in the verify result, so peer_verified remains false. */
        t->base.flags &= (uint16_t)~TF_VERIFY_ERR;
        char *e = tether__tls_err(t);
        if (e != NULL) {
            e[0] = '\0';
        }
        ERR_clear_error();
        return 1;
    }
    return ok;
}
