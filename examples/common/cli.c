/* SPDX-License-Identifier: MIT */
/* Command-line plumbing shared by the examples (see cli.h): the shared
 * flags, number parsing, and the checks and set-up of the TLS flags. */
#include "common/cli.h"

#include <arpa/inet.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum cli_result cli_option(const char *prog, const char *usage, int ch, char **argv,
                           struct cli_tls *tls)
{
    switch (ch) {
    case CLI_OPT_HELP:
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    case CLI_OPT_VERSION:
        /* The library actually loaded, which may differ from the headers. */
        printf("%s (tether %s)\n", prog, tether_version());
        return CLI_EXIT_OK;
    case ':': {
        /* argv[optind - 1] is the flag itself, e.g. "--ca". */
        const char *flag = argv[optind - 1];
        fprintf(stderr, "error: %s needs a value (see --help)\n", flag);
        return CLI_EXIT_ERROR;
    }
    case '?':
        if (optopt != 0 && optopt < 256) {
            fprintf(stderr, "error: unknown option '-%c' (see --help)\n", optopt);
        } else {
            fprintf(stderr, "error: unknown option '%s' (see --help)\n", argv[optind - 1]);
        }
        return CLI_EXIT_ERROR;
    default:
        break;
    }
    if (tls == NULL) {
        return CLI_NOT_MINE;
    }
    switch (ch) {
    case CLI_OPT_CA:
        tls->ca = optarg;
        return CLI_HANDLED;
    case CLI_OPT_CERT:
        tls->cert = optarg;
        return CLI_HANDLED;
    case CLI_OPT_KEY:
        tls->key = optarg;
        return CLI_HANDLED;
    case CLI_OPT_SERVERNAME:
        tls->servername = optarg;
        return CLI_HANDLED;
    case CLI_OPT_INSECURE:
        tls->insecure = true;
        return CLI_HANDLED;
    case CLI_OPT_VERIFY_CLIENT:
        tls->verify_client = true;
        return CLI_HANDLED;
    default:
        return CLI_NOT_MINE;
    }
}

enum cli_result cli_bad_value(const char *name, const char *arg, const char *what)
{
    fprintf(stderr, "error: --%s: invalid value '%s' (expected %s)\n", name, arg, what);
    return CLI_EXIT_ERROR;
}

enum cli_result cli_no_operands(int argc, char **argv)
{
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", argv[optind]);
        return CLI_EXIT_ERROR;
    }
    return CLI_HANDLED;
}

bool cli_parse_size(const char *s, size_t *out)
{
    /* strtoull() alone would also take "-1" and " 1". */
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || v > SIZE_MAX) {
        return false;
    }
    *out = (size_t)v;
    return true;
}

bool cli_parse_ms(const char *s, size_t *out)
{
    size_t v;
    if (!cli_parse_size(s, &v) || v == 0 || v > INT_MAX) {
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_framing(const char *s, tether_framing_kind *out)
{
    static const char *const names[] = {[TETHER_FRAMING_LEN32] = "len32",
                                        [TETHER_FRAMING_VARINT] = "varint",
                                        [TETHER_FRAMING_LINE] = "line"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (tether_framing_kind)i;
            return true;
        }
    }
    return false;
}

/* "16 MiB" for whole MiB, else "N bytes". */
static void describe_bytes(char *buf, size_t len, size_t n)
{
    if (n >= ((size_t)1 << 20) && n % ((size_t)1 << 20) == 0) {
        snprintf(buf, len, "%zu MiB (%zu bytes)", n >> 20, n);
    } else {
        snprintf(buf, len, "%zu bytes", n);
    }
}

bool cli_check_max_msg(size_t max_msg)
{
    if (max_msg > CLI_MAX_MSG_LIMIT) {
        fprintf(stderr, "error: --max-msg %zu is above tether's limit of 1 GiB (%zu bytes)\n",
                max_msg, CLI_MAX_MSG_LIMIT);
        return false;
    }
    return true;
}

bool cli_check_size(size_t size, size_t max_msg)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    size_t limit = max_msg > 0 ? max_msg : co.max_msg;
    if (size <= limit) {
        return true;
    }
    if (max_msg > 0) {
        fprintf(stderr, "error: --size %zu is above --max-msg %zu\n", size, max_msg);
        return false;
    }
    char what[64];
    describe_bytes(what, sizeof what, limit);
    fprintf(stderr,
            "error: --size %zu is above the largest message tether allows by default, %s: "
            "raise the limit with --max-msg (at most 1 GiB; the server needs it too)\n",
            size, what);
    return false;
}

static bool is_tls_url(const char *url)
{
    return strncmp(url, "tls://", 6) == 0 || strncmp(url, "tls+srv://", 10) == 0 ||
           strncmp(url, "wss://", 6) == 0;
}

/* The checks that clients and servers share. */
static bool check_common(const struct cli_tls *tls, const char *url, bool any_flag,
                         const char *flags, bool server)
{
    /* Servers cannot listen on an SRV name, so they name only tls://. */
    if (any_flag && !is_tls_url(url)) {
        fprintf(stderr, "error: %s only apply to %s URLs, not to %s\n", flags,
                server ? "tls:// and wss://" : "tls://, tls+srv:// and wss://", url);
        return false;
    }
    if ((tls->cert == NULL) != (tls->key == NULL)) {
        fprintf(stderr, "error: %s needs %s as well (a certificate and its private key)\n",
                tls->cert != NULL ? "--cert" : "--key", tls->cert != NULL ? "--key" : "--cert");
        return false;
    }
    return true;
}

bool cli_tls_client(const struct cli_tls *tls, const char *url, tether_tls_config **out)
{
    *out = NULL;
    bool any = tls->ca != NULL || tls->cert != NULL || tls->key != NULL ||
               tls->servername != NULL || tls->insecure;
    if (!check_common(tls, url, any, "--ca, --cert, --key, --servername and --insecure", false)) {
        return false;
    }
    if (!any) {
        return true; /* tls:// without flags: the system's trust store */
    }
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.ca_file = tls->ca;
    to.cert_file = tls->cert;
    to.key_file = tls->key;
    to.server_name = tls->servername;
    to.insecure_skip_verify = tls->insecure;
    tether_error err;
    if (tether_tls_config_new(out, &to, &err) != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message); /* names the file and the problem */
        return false;
    }
    return true;
}

bool cli_tls_server(const struct cli_tls *tls, const char *url, bool require_client,
                    tether_tls_config **out)
{
    *out = NULL;
    bool any = tls->ca != NULL || tls->cert != NULL || tls->key != NULL || tls->verify_client;
    if (!check_common(tls, url, any, "--cert, --key, --ca and --verify-client", true)) {
        return false;
    }
    if (!is_tls_url(url)) {
        return true;
    }
    if (tls->cert == NULL) {
        fprintf(stderr,
                "error: %.3s:// needs --cert and --key (the server's certificate and "
                "private key)\n",
                url);
        return false;
    }
    bool verify = require_client || tls->verify_client;
    if (verify && tls->ca == NULL) {
        fprintf(stderr, "error: %s needs --ca (the CA that client certificates must come from)\n",
                require_client ? "checking client certificates" : "--verify-client");
        return false;
    }
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.cert_file = tls->cert;
    to.key_file = tls->key;
    to.ca_file = tls->ca;
    to.client_auth = verify ? TETHER_TLS_CLIENT_AUTH_REQUIRED : TETHER_TLS_CLIENT_AUTH_NONE;
    tether_error err;
    if (tether_tls_config_new(out, &to, &err) != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return false;
    }
    return true;
}

/* ---- Timeouts of accepted connections ---------------------------------- */

/* A decimal number from 0 to INT_MAX. */
static bool parse_int0(const char *s, long *out)
{
    size_t v;
    if (!cli_parse_size(s, &v) || v > INT_MAX) {
        return false;
    }
    *out = (long)v;
    return true;
}

enum cli_result cli_timeouts_option(int ch, const char *arg, struct cli_timeouts *t)
{
    static const struct {
        int ch;
        const char *name;
        const char *what;
        size_t off;
    } flags[] = {
        {CLI_OPT_IDLE_TIMEOUT, "idle-timeout", "milliseconds, 0 for none",
         offsetof(struct cli_timeouts, idle_ms)},
        {CLI_OPT_FRAME_TIMEOUT, "frame-timeout", "milliseconds, 0 for none",
         offsetof(struct cli_timeouts, frame_ms)},
        {CLI_OPT_FRAME_MIN_RATE, "frame-min-rate", "bytes per second, 0 for none",
         offsetof(struct cli_timeouts, frame_rate)},
        {CLI_OPT_WRITE_TIMEOUT, "write-timeout", "milliseconds, 0 for none",
         offsetof(struct cli_timeouts, write_ms)},
        {CLI_OPT_WRITE_MIN_RATE, "write-min-rate", "bytes per second, 0 for none",
         offsetof(struct cli_timeouts, write_rate)},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (flags[i].ch == ch) {
            long *dst = (long *)(void *)((char *)t + flags[i].off);
            return parse_int0(arg, dst) ? CLI_HANDLED
                                        : cli_bad_value(flags[i].name, arg, flags[i].what);
        }
    }
    return CLI_NOT_MINE;
}

void cli_timeouts_apply(const struct cli_timeouts *t, tether_conn_opts *co)
{
    if (t->idle_ms >= 0) {
        co->idle_timeout_ms = (int)t->idle_ms;
    }
    if (t->frame_ms >= 0) {
        co->frame_timeout_ms = (int)t->frame_ms;
    }
    if (t->frame_rate >= 0) {
        co->frame_min_rate = (int)t->frame_rate;
    }
    if (t->write_ms >= 0) {
        co->write_timeout_ms = (int)t->write_ms;
    }
    if (t->write_rate >= 0) {
        co->write_min_rate = (int)t->write_rate;
    }
    /* A window turned off takes its rate with it (tether would reject a
     * rate without a window). */
    if (co->frame_timeout_ms == 0 && t->frame_rate < 0) {
        co->frame_min_rate = 0;
    }
    if (co->write_timeout_ms == 0 && t->write_rate < 0) {
        co->write_min_rate = 0;
    }
}

/* ---- server limits ------------------------------------------------------- */

bool cli_parse_bytes(const char *s, size_t *out)
{
    char num[32];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof num) {
        return false;
    }
    unsigned shift = 0;
    switch (s[n - 1]) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        break;
    }
    memcpy(num, s, n + 1);
    if (shift != 0) {
        num[n - 1] = '\0';
    }
    size_t v;
    if (!cli_parse_size(num, &v) || v > (SIZE_MAX >> shift)) {
        return false;
    }
    *out = v << shift;
    return true;
}

enum cli_result cli_limits_option(int ch, const char *arg, struct cli_limits *lim)
{
    switch (ch) {
    case CLI_OPT_MAX_CONNS:
        if (!cli_parse_size(arg, &lim->max_conns)) {
            return cli_bad_value("max-conns", arg, "a number of connections, 0 for no limit");
        }
        lim->max_conns_set = true;
        return CLI_HANDLED;
    case CLI_OPT_MEM_LIMIT:
        if (!cli_parse_bytes(arg, &lim->mem_limit)) {
            return cli_bad_value("mem-limit", arg, "bytes with an optional K, M or G suffix");
        }
        lim->mem_limit_set = true;
        return CLI_HANDLED;
    default:
        return CLI_NOT_MINE;
    }
}

bool cli_limits_apply(const struct cli_limits *lim, tether_loop *loop, tether_listen_opts *lo)
{
    if (lim->max_conns_set) {
        lo->max_conns = lim->max_conns;
    }
    if (lim->mem_limit_set) {
        int rv = tether_loop_set_mem_limit(loop, lim->mem_limit);
        if (rv != TETHER_OK) {
            fprintf(stderr, "error: --mem-limit: %s\n", tether_strerror(rv));
            return false;
        }
    }
    return true;
}

/* ---- servers behind a proxy -------------------------------------------- */

enum cli_result cli_proxy_option(int ch, struct cli_proxy *px)
{
    switch (ch) {
    case CLI_OPT_PROXY_PROTOCOL:
        px->proxy_protocol = true;
        return CLI_HANDLED;
    case CLI_OPT_VERBOSE:
        px->verbose = true;
        return CLI_HANDLED;
    default:
        return CLI_NOT_MINE;
    }
}

void cli_proxy_apply(const struct cli_proxy *px, tether_listen_opts *lo)
{
    if (px->proxy_protocol) {
        lo->proxy_protocol = TETHER_PROXY_V1 | TETHER_PROXY_V2;
    }
}

void cli_proxy_log_accept(const struct cli_proxy *px, const char *prog, tether_conn *c)
{
    if (!px->verbose) {
        return;
    }
    char peer[160];
    if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        snprintf(peer, sizeof peer, "an unknown peer");
    }
    tether_proxy_info info;
    if (tether_conn_proxy_info(c, &info) != TETHER_OK) {
        printf("%s: accepted %s\n", prog, peer);
    } else if (info.local) {
        printf("%s: accepted %s (PROXY v%d LOCAL: a health check or an unknown client)\n", prog,
               peer, info.version);
    } else {
        printf("%s: accepted %s via %s (PROXY v%d)\n", prog, peer, info.proxy, info.version);
    }
    fflush(stdout);
}

/* IP, IP:PORT or [IPv6]:PORT, as tether_conn_opts::proxy_source takes it. */
static bool cli_valid_source(const char *s)
{
    char host[64];
    const char *port = NULL;
    size_t hl;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':')) {
            return false;
        }
        hl = (size_t)(end - s - 1);
        s++;
        port = end[1] == ':' ? end + 2 : NULL;
    } else {
        const char *colon = strchr(s, ':');
        bool one_colon = colon != NULL && strchr(colon + 1, ':') == NULL;
        hl = one_colon ? (size_t)(colon - s) : strlen(s);
        port = one_colon ? colon + 1 : NULL;
    }
    if (hl == 0 || hl >= sizeof host) {
        return false;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    size_t p;
    if (port != NULL && (!cli_parse_size(port, &p) || p > 65535)) {
        return false;
    }
    unsigned char bin[16];
    return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
}

enum cli_result cli_proxy_client_option(int ch, const char *arg, struct cli_proxy_client *pc)
{
    switch (ch) {
    case CLI_OPT_SEND_PROXY:
        if (strcmp(arg, "v1") == 0) {
            pc->version = TETHER_PROXY_V1;
        } else if (strcmp(arg, "v2") == 0) {
            pc->version = TETHER_PROXY_V2;
        } else {
            return cli_bad_value("send-proxy", arg, "v1 or v2");
        }
        return CLI_HANDLED;
    case CLI_OPT_PROXY_SOURCE:
        if (!cli_valid_source(arg)) {
            return cli_bad_value("proxy-source", arg, "IP, IP:PORT or [IPv6]:PORT");
        }
        pc->source = arg;
        return CLI_HANDLED;
    default:
        return CLI_NOT_MINE;
    }
}

bool cli_proxy_client_apply(const struct cli_proxy_client *pc, tether_conn_opts *co)
{
    if (pc->source != NULL && pc->version == 0) {
        fprintf(stderr, "error: --proxy-source needs --send-proxy v1 or v2\n");
        return false;
    }
    co->proxy_protocol = pc->version;
    co->proxy_source = pc->source;
    return true;
}

/* ---- threads ----------------------------------------------------------- */

enum cli_result cli_threads_option(int ch, const char *arg, struct cli_threads *t)
{
    if (ch != CLI_OPT_THREADS) {
        return CLI_NOT_MINE;
    }
    if (!cli_parse_size(arg, &t->n) || t->n > TETHER_GROUP_MAX_LOOPS) {
        char what[80];
        snprintf(what, sizeof what, "a number of threads from 0 (one per CPU) to %u",
                 TETHER_GROUP_MAX_LOOPS);
        return cli_bad_value("threads", arg, what);
    }
    t->set = true;
    return CLI_HANDLED;
}

/* ---- stopping on SIGINT and SIGTERM ----------------------------------- */

bool cli_watch_stop_signals(tether_loop *loop, tether_signal *sigs[2], tether_signal_cb cb,
                            void *ud)
{
    static const int signums[2] = {SIGINT, SIGTERM};
    static const char *const names[2] = {"SIGINT", "SIGTERM"};
    for (int i = 0; i < 2; i++) {
        tether_error err;
        int rv = tether_signal_new(&sigs[i], loop);
        if (rv == TETHER_OK) {
            rv = tether_signal_start(sigs[i], signums[i], cb, ud, &err);
        } else {
            snprintf(err.message, sizeof err.message, "%s", tether_strerror(rv));
        }
        if (rv != TETHER_OK) {
            fprintf(stderr, "error: cannot watch %s: %s\n", names[i], err.message);
            return false;
        }
        tether_signal_unref(sigs[i]);
    }
    return true;
}

void cli_unwatch_stop_signals(tether_signal *sigs[2])
{
    for (int i = 0; i < 2; i++) {
        tether_signal_free(sigs[i]);
        sigs[i] = NULL;
    }
}
