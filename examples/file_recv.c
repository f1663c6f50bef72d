/* SPDX-License-Identifier: MIT */
/* file_recv: receives one file from file_send and checks its size and
 * SHA-256.
 *
 *   file_recv --listen tcp://127.0.0.1:7001 --out copy.iso [--resume] [--force]
 *   file_recv --listen tls://127.0.0.1:7001 --out copy.iso
 *             --cert certs/server.pem --key certs/server.key
 *             [--ca certs/ca.pem --verify-client] [--progress auto|bar|lines|none]
 *
 * It prints `listening on URL` once the sender can connect, takes one
 * transfer (see file_send.c for the protocol), and exits: with 0 and
 * `received NAME: N bytes, sha256 HEX: OK` on stdout when the file arrived
 * whole and its SHA-256 matches the sender's, otherwise with 1 and one
 * `error: ...` line on stderr. Other senders that connect meanwhile are
 * told that it is busy.
 *
 * Before it listens, it checks that PATH's directory exists and is
 * writable, and that PATH does not exist yet (--force overwrites it), so a
 * typo costs nothing. The data goes to PATH.part and is renamed to PATH
 * only once verified, so PATH never holds a partial or corrupt file. When
 * the connection breaks in the middle, PATH.part is kept; run again with
 * --resume and the sender only sends the rest. The final SHA-256 covers
 * the whole file, so a leftover PATH.part that does not belong to this file
 * is detected, and removed (it says so) so that the next attempt starts
 * afresh.
 *
 * What it shows:
 * - a server that takes whole messages and dispatches on their first byte;
 *   it never has to find where one chunk ends and the next begins;
 * - incremental SHA-256 with OpenSSL's EVP interface;
 * - progress on stderr, as a bar on a terminal or as lines every 10 %.
 *
 * Writing to the file happens on the loop's thread. That is fine for a
 * program with one connection: while a write waits for the disk, the loop
 * does not read, TCP's flow control slows the sender down, and nothing is
 * buffered without bound. A server with many connections would hand disk
 * I/O to another thread. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags */
#include "common/file_common.h"

/* The sender's chunks are 64 KiB by default and at most 8 MiB. */
#define MAX_MSG (8 * 1024 * 1024 + 1)

struct options {
    const char *listen_url;
    const char *out;
    bool resume;
    bool force;
    enum progress_mode progress;
    struct cli_tls tls;
    /* Timeouts and limits of the sender's connection (common/cli.h): the
     * server defaults against slow and stuck peers, which these change. */
    struct cli_timeouts timeouts;
    struct cli_limits limits;
};

struct receiver {
    const struct options *opt;
    tether_loop *loop;
    tether_listener *listener;
    tether_conn *conn; /* the transfer; NULL before it starts and after it ends */
    char peer[80];
    char part[4096]; /* PATH.part */
    int fd;          /* open on `part`, or -1 */
    char name[257];  /* as announced, made printable */
    uint64_t size;
    uint64_t received; /* bytes in `part`, including a resumed prefix */
    uint64_t offset;   /* where this transfer started */
    EVP_MD_CTX *md;
    enum {
        WAIT_HEADER,
        RECEIVING,
        DONE
    } phase;
    struct progress prog;
    bool finished;
    int status;
};

static const char usage[] =
    "usage: file_recv --listen URL --out PATH [options]\n"
    "Receives one file from file_send, checks its size and SHA-256, and exits.\n\n"
    "  --listen URL      tcp://HOST:PORT (port 0 picks one), tls://HOST:PORT\n"
    "                    (with --cert and --key) or unix:///path\n"
    "  --out PATH        where to store the file (written as PATH.part first)\n"
    "  --resume          continue from PATH.part left by an interrupted transfer\n"
    "  --force           overwrite PATH if it exists\n"
    "  --progress MODE   auto (a bar on a terminal, lines otherwise; default),\n"
    "                    bar, lines or none\n" CLI_USAGE_TLS_SERVER
    "  --verify-client   require the sender to present a certificate from --ca\n" CLI_USAGE_TIMEOUTS
        CLI_USAGE_LIMITS CLI_USAGE_COMMON;

/* ---- the transfer ---------------------------------------------------------------- */

static void finish(struct receiver *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports the outcome once and winds down: no more senders, and the
 * transfer's connection closes (gracefully, so that a verdict or error
 * message queued for the sender still reaches it). */
static void finish(struct receiver *r, int status, const char *fmt, ...)
{
    if (r->finished) {
        return;
    }
    r->finished = true;
    r->status = status;
    if (status != 0 && r->prog.mode == PROGRESS_BAR && r->phase == RECEIVING) {
        fputc('\n', stderr);
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(status == 0 ? stdout : stderr, fmt, ap);
    va_end(ap);
    tether_listener_close(r->listener);
    r->listener = NULL;
    tether_conn_close(r->conn);
}

/* Sends a message of `type` followed by text to the sender. */
static void reply(struct receiver *r, uint8_t type, int status, const char *text)
{
    uint8_t buf[512];
    size_t n = 0;
    buf[n++] = type;
    if (status >= 0) {
        buf[n++] = (uint8_t)status;
    }
    size_t tl = strlen(text);
    if (tl > sizeof buf - n) {
        tl = sizeof buf - n;
    }
    memcpy(buf + n, text, tl);
    tether_conn_send(r->conn, buf, n + tl); /* a failure shows up in on_close */
}

static bool write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* With --resume: hashes what PATH.part already holds and returns its
 * length, or 0 (after emptying it) when it cannot be the start of this file. */
static uint64_t resume_part(struct receiver *r)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        return 0;
    }
    if ((uint64_t)st.st_size > r->size) {
        fprintf(stderr,
                "%s has %llu bytes, more than the %llu of %s: emptying it, starting afresh\n",
                r->part, (unsigned long long)st.st_size, (unsigned long long)r->size, r->name);
        return 0;
    }
    uint8_t buf[65536];
    uint64_t have = 0;
    for (;;) {
        ssize_t n = read(r->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        EVP_DigestUpdate(r->md, buf, (size_t)n);
        have += (uint64_t)n;
    }
    return have;
}

/* 'H' size name: open PATH.part and say where to start. */
static void on_header(struct receiver *r, const uint8_t *data, size_t len)
{
    r->size = get_u64(data + 1);
    size_t nl = len - 9 < sizeof r->name - 1 ? len - 9 : sizeof r->name - 1;
    for (size_t i = 0; i < nl; i++) {
        uint8_t ch = data[9 + i];
        r->name[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    r->name[nl] = '\0';

    struct stat st;
    if (!r->opt->resume && stat(r->part, &st) == 0 && st.st_size > 0) {
        fprintf(stderr,
                "replacing %s (%llu bytes left by an earlier transfer; --resume would "
                "continue it)\n",
                r->part, (unsigned long long)st.st_size);
    }
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (r->opt->resume ? 0 : O_TRUNC);
    r->fd = open(r->part, flags, 0644);
    if (r->fd < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot write %.200s: %s", r->part, strerror(errno));
        reply(r, 'E', -1, msg);
        finish(r, 1, "error: %s\n", msg);
        return;
    }
    r->offset = r->opt->resume ? resume_part(r) : 0;
    if (r->offset == 0) {
        /* Nothing usable: start the hash afresh (resume_part may have
         * hashed a prefix that it then threw away). */
        EVP_DigestInit_ex(r->md, EVP_sha256(), NULL);
        if (ftruncate(r->fd, 0) != 0 || lseek(r->fd, 0, SEEK_SET) != 0) {
            reply(r, 'E', -1, "cannot truncate the output file");
            finish(r, 1, "error: cannot truncate %s: %s\n", r->part, strerror(errno));
            return;
        }
    } else {
        fprintf(stderr, "resuming %s at byte %llu\n", r->part, (unsigned long long)r->offset);
    }
    r->received = r->offset;
    r->phase = RECEIVING;
    uint8_t accept[9] = {'A'};
    put_u64(accept + 1, r->offset);
    tether_conn_send(r->conn, accept, sizeof accept);
    progress_start(&r->prog, r->opt->progress, r->size, tether_loop_now(r->loop));
    progress_update(&r->prog, r->received, tether_loop_now(r->loop), false);
}

/* 'T' sha256: compare size and digest; rename PATH.part to PATH. */
static void on_trailer(struct receiver *r, const uint8_t *want)
{
    uint8_t got[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(r->md, got, &dlen);
    char got_hex[65], want_hex[65];
    hex(got_hex, got, sizeof got);
    hex(want_hex, want, 32);
    progress_update(&r->prog, r->received, tether_loop_now(r->loop), true);
    r->phase = DONE;
    char msg[300];
    bool ok = false;
    if (r->received != r->size) {
        snprintf(msg, sizeof msg, "size mismatch: received %llu bytes, expected %llu",
                 (unsigned long long)r->received, (unsigned long long)r->size);
    } else if (memcmp(got, want, sizeof got) != 0) {
        snprintf(msg, sizeof msg, "sha256 mismatch: received %s, expected %s", got_hex, want_hex);
    } else if (fsync(r->fd) != 0 || close(r->fd) != 0 || rename(r->part, r->opt->out) != 0) {
        snprintf(msg, sizeof msg, "cannot store %.200s: %s", r->opt->out, strerror(errno));
        r->fd = -1;
    } else {
        r->fd = -1;
        ok = true;
    }
    if (ok) {
        reply(r, 'R', 0, "ok");
        finish(r, 0, "received %s: %llu bytes%s, sha256 %s: OK\n", r->name,
               (unsigned long long)r->size, r->offset > 0 ? " (resumed)" : "", got_hex);
        return;
    }
    /* A corrupt PATH.part is useless for resuming: start afresh next time. */
    bool removed = unlink(r->part) == 0;
    reply(r, 'R', 1, msg);
    finish(r, 1, "error: %s: %s%s%s%s\n", r->name, msg, removed ? "; removed " : "",
           removed ? r->part : "", removed ? " (it cannot be resumed)" : "");
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct receiver *r = ud;
    if (r->finished) {
        return;
    }
    uint8_t type = len > 0 ? data[0] : 0;
    if (type == 'H' && len >= 9 && r->phase == WAIT_HEADER) {
        on_header(r, data, len);
    } else if (type == 'D' && r->phase == RECEIVING) {
        size_t n = len - 1;
        if (n > r->size - r->received) {
            reply(r, 'E', -1, "more data than the header announced");
            finish(r, 1, "error: %s: more data than the %llu bytes announced\n", r->name,
                   (unsigned long long)r->size);
            return;
        }
        if (!write_all(r->fd, data + 1, n)) {
            reply(r, 'E', -1, "cannot write the file");
            finish(r, 1, "error: cannot write %s: %s\n", r->part, strerror(errno));
            return;
        }
        EVP_DigestUpdate(r->md, data + 1, n);
        r->received += n;
        progress_update(&r->prog, r->received, tether_loop_now(r->loop), false);
    } else if (type == 'T' && len == 33 && r->phase == RECEIVING) {
        on_trailer(r, data + 1);
    } else {
        reply(r, 'E', -1, "protocol error");
        finish(r, 1, "error: unexpected %zu-byte message from %s\n", len, r->peer);
    }
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct receiver *r = ud;
    if (r == NULL) {
        return; /* a sender turned away as busy */
    }
    if (!r->finished) {
        const char *detail = tether_conn_last_error(c);
        const char *why = detail[0] != '\0' ? detail : tether_strerror(reason);
        if (r->phase == RECEIVING) {
            finish(r, 1,
                   "error: the transfer of %s from %s broke off after %llu of %llu bytes: %s; "
                   "%s is kept (--resume continues it)\n",
                   r->name, r->peer, (unsigned long long)r->received, (unsigned long long)r->size,
                   why, r->part);
        } else {
            finish(r, 1, "error: %s closed the connection before sending a file: %s\n", r->peer,
                   why);
        }
    }
    r->conn = NULL;
}

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct receiver *r = ud;
    if (r->conn != NULL || r->finished) {
        static const char busy[] = "Ebusy: another transfer is in progress";
        tether_conn_send(c, busy, sizeof busy - 1);
        tether_conn_close(c); /* its user data stays NULL */
        return;
    }
    r->conn = c;
    tether_conn_set_userdata(c, r);
    if (tether_conn_peer(c, r->peer, sizeof r->peer) != TETHER_OK) {
        snprintf(r->peer, sizeof r->peer, "the sender");
    }
}

static void on_listener_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l, (void)err, (void)ud;
    fprintf(stderr, "file_recv: %s\n", detail);
}

/* ---- options ------------------------------------------------------------------- */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_LISTEN = 256,
        OPT_OUT,
        OPT_RESUME,
        OPT_FORCE,
        OPT_PROGRESS
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"out", required_argument, NULL, OPT_OUT},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"force", no_argument, NULL, OPT_FORCE},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        CLI_LONGOPTS_TLS_SERVER,
        CLI_LONGOPTS_TIMEOUTS,
        CLI_LONGOPTS_LIMITS,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* cli_option() reports problems, in one line */
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result res = CLI_HANDLED;
        switch (ch) {
        case OPT_LISTEN:
            opt->listen_url = optarg;
            break;
        case OPT_OUT:
            opt->out = optarg;
            break;
        case OPT_RESUME:
            opt->resume = true;
            break;
        case OPT_FORCE:
            opt->force = true;
            break;
        case OPT_PROGRESS:
            if (!parse_progress(optarg, &opt->progress)) {
                res = cli_bad_value("progress", optarg, "auto, bar, lines or none");
            }
            break;
        default:
            res = cli_timeouts_option(ch, optarg, &opt->timeouts);
            if (res == CLI_NOT_MINE) {
                res = cli_limits_option(ch, optarg, &opt->limits);
            }
            if (res == CLI_NOT_MINE) {
                res = cli_option("file_recv", usage, ch, argv, &opt->tls);
            }
            break;
        }
        if (res == CLI_EXIT_OK || res == CLI_EXIT_ERROR) {
            return res == CLI_EXIT_OK ? -1 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (opt->listen_url == NULL || opt->out == NULL) {
        fprintf(stderr, "error: %s is required (see --help)\n",
                opt->listen_url == NULL ? "--listen URL" : "--out PATH");
        return 1;
    }
    return 0;
}

/* Checks --out before anything is listening: its directory exists and is
 * writable, and it is not a directory, nor (without --force) a file. */
static bool check_out(const struct options *opt)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", opt->out);
    const char *dir = dirname(copy); /* "." for a bare name */
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: --out %s: the directory %s does not exist\n", opt->out, dir);
        return false;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "error: --out %s: cannot write in %s: %s\n", opt->out, dir,
                strerror(errno));
        return false;
    }
    if (stat(opt->out, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "error: --out %s is a directory; give a file name\n", opt->out);
            return false;
        }
        if (!opt->force) {
            fprintf(stderr, "error: --out %s exists; pass --force to overwrite it\n", opt->out);
            return false;
        }
    }
    return true;
}

/* ---- main ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options opt = {.progress = PROGRESS_AUTO, .timeouts = CLI_TIMEOUTS_INIT};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }
    struct receiver r = {.opt = &opt, .fd = -1, .phase = WAIT_HEADER, .status = 1};
    tether_tls_config *tls = NULL;
    if ((size_t)snprintf(r.part, sizeof r.part, "%s.part", opt.out) >= sizeof r.part) {
        fprintf(stderr, "error: --out: path too long\n");
        goto out;
    }
    if (!check_out(&opt)) {
        goto out;
    }
    r.md = EVP_MD_CTX_new();
    if (r.md == NULL || EVP_DigestInit_ex(r.md, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "error: cannot set up SHA-256\n");
        goto out;
    }
    rv = tether_loop_new(&r.loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loop: %s\n", tether_strerror(rv));
        goto out;
    }

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.max_msg = MAX_MSG;
    co.on_message = on_message;
    co.on_close = on_close;
    cli_timeouts_apply(&opt.timeouts, &co);
    tether_error err;
    /* tls:// needs --cert and --key; --verify-client asks the sender for a
     * certificate from --ca (see common/cli.c). */
    if (!cli_tls_server(&opt.tls, opt.listen_url, false, &tls)) {
        goto out;
    }
    co.tls = tls;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.on_error = on_listener_error;
    lo.userdata = &r;
    lo.conn_opts = &co;
    if (!cli_limits_apply(&opt.limits, r.loop, &lo)) {
        goto out;
    }
    rv = tether_listen(&r.listener, r.loop, opt.listen_url, &lo, &err);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        goto out;
    }
    printf("listening on %s\n", tether_listener_url(r.listener));
    fflush(stdout);

    /* Runs until the transfer has ended and its connection has closed. */
    r.status = 0;
    rv = tether_loop_run(r.loop);
    if (rv != TETHER_OK && !r.finished) {
        fprintf(stderr, "error: the event loop failed: %s\n", tether_strerror(rv));
        r.status = 1;
    }

out:
    tether_tls_config_unref(tls); /* the listener keeps its own reference */
    tether_loop_free(r.loop);
    if (r.fd >= 0) {
        close(r.fd);
    }
    EVP_MD_CTX_free(r.md);
    return r.status;
}
