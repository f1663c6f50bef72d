/* SPDX-License-Identifier: MIT */
/* The signature algorithms a TLS server takes from the client's list.
 *
 * OpenSSL keeps, for the life of every connection, the list of signature
 * algorithms both sides support (SSL_get_shared_sigalgs(), 8 bytes an
 * entry): against the list a default OpenSSL 3.0 client offers, a server
 * with OpenSSL's default list keeps 14 to 16 entries (112 to 128 bytes),
 * though its own key can sign with only a few of them. An idle server
 * pays that per connection (issue #12). A server that asks for no client
 * certificate uses the list for one thing only, choosing how it signs its
 * handshake, so it may as well be the algorithms its key can make, in
 * OpenSSL's default order: the same choice for every client, 3 or 4
 * entries kept, plus the list itself (one small block per connection).
 * With client authentication the list is also what the server's
 * CertificateRequest offers (and so which client keys it accepts): such
 * servers keep OpenSSL's default. So do keys this file does not know
 * (DSA, RSA-PSS, other curves): nothing changes for them. */
#include "tls_transport.h"

#include <string.h>

#include <openssl/err.h>

/* A key's algorithms, in OpenSSL 3's default order (ssl/t1_lib.c,
 * tls12_sigalgs): as digest and key NID pairs (SSL_set1_sigalgs(), some
 * 400 instructions), or by name where a pair would be ambiguous
 * (RSA-PSS padding with an RSA key: rsa_pss_rsae_*, not rsa_pss_pss_*;
 * SSL_set1_sigalgs_list(), some 3 000). The SHA-224 and SHA-1 entries
 * stay for TLS 1.2 peers that offer them (the security level decides, as
 * before), and for those that send no list at all (RFC 5246's defaults). */
struct tls_sigalgs {
    const int *pairs;
    size_t npairs; /* ints in pairs */
    const char *names;
};

static const int SIG_EC[] = {NID_sha256,  EVP_PKEY_EC, NID_sha384,  EVP_PKEY_EC, NID_sha512,
                             EVP_PKEY_EC, NID_sha224,  EVP_PKEY_EC, NID_sha1,    EVP_PKEY_EC};
static const int SIG_ED25519[] = {NID_undef, EVP_PKEY_ED25519};
static const int SIG_ED448[] = {NID_undef, EVP_PKEY_ED448};

static const struct tls_sigalgs SIGALGS_EC = {SIG_EC, sizeof SIG_EC / sizeof SIG_EC[0], NULL};
static const struct tls_sigalgs SIGALGS_ED25519 = {SIG_ED25519, 2, NULL};
static const struct tls_sigalgs SIGALGS_ED448 = {SIG_ED448, 2, NULL};
static const struct tls_sigalgs SIGALGS_RSA = {
    NULL, 0,
    "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:rsa_pkcs1_sha256:"
    "rsa_pkcs1_sha384:rsa_pkcs1_sha512:rsa_pkcs1_sha224:rsa_pkcs1_sha1"};

/* The SSL_CTX ex_data index of a server SSL_CTX's list; -1 if OpenSSL was
 * out of memory (then no SSL_CTX has one). */
static pthread_once_t g_sig_once = PTHREAD_ONCE_INIT;
static int g_sig_idx = -1;

static void sig_idx_init(void)
{
    g_sig_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* The list for a key, or NULL to keep OpenSSL's default. ECDSA only on
 * the curves whose TLS 1.3 algorithms the list names (a brainpool key
 * needs OpenSSL 3.2's own entries). */
static const struct tls_sigalgs *sigalgs_for(EVP_PKEY *pk)
{
    switch (pk != NULL ? EVP_PKEY_get_base_id(pk) : EVP_PKEY_NONE) {
    case EVP_PKEY_EC: {
        char g[32];
        if (EVP_PKEY_get_group_name(pk, g, sizeof g, NULL) != 1) {
            return NULL;
        }
        bool known = strcmp(g, "prime256v1") == 0 || strcmp(g, "secp384r1") == 0 ||
                     strcmp(g, "secp521r1") == 0;
        return known ? &SIGALGS_EC : NULL;
    }
    case EVP_PKEY_RSA:
        return &SIGALGS_RSA;
    case EVP_PKEY_ED25519:
        return &SIGALGS_ED25519;
    case EVP_PKEY_ED448:
        return &SIGALGS_ED448;
    default:
        return NULL;
    }
}

void tether__tls_sigalgs_note(SSL_CTX *ctx)
{
    pthread_once(&g_sig_once, sig_idx_init);
    const struct tls_sigalgs *s = sigalgs_for(SSL_CTX_get0_privatekey(ctx));
    if (s != NULL && g_sig_idx >= 0 && SSL_CTX_set_ex_data(ctx, g_sig_idx, (void *)s) != 1) {
        ERR_clear_error(); /* (out of memory: the default list, as before) */
    }
    ERR_clear_error();
}

void tether__tls_server_sigalgs(SSL *ssl)
{
    if (g_sig_idx < 0) {
        return;
    }
    const struct tls_sigalgs *s = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_sig_idx);
    if (s == NULL) {
        return;
    }
    /* (On failure, out of memory, the SSL keeps the default list.) */
    int ok = s->pairs != NULL ? (int)SSL_set1_sigalgs(ssl, s->pairs, (long)s->npairs)
                              : (int)SSL_set1_sigalgs_list(ssl, s->names);
    if (ok != 1) {
        ERR_clear_error();
    }
}
