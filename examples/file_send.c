/* SPDX-License-Identifier: MIT */
/* file_send: sends a file to file_recv as a sequence of messages, with a
 * SHA-256 check at the end.
 *
 *   file_send --connect tcp://127.0.0.1:7001 --file big.iso
 *   file_send --connect tls://localhost:7001 --file big.iso --ca certs/ca.pem
 *             [--cert certs/client.pem --key certs/client.key]
 *             [--name NAME] [--chunk BYTES] [--progress auto|bar|lines|none]
 *
 * The protocol (see file_recv.c for the receiving side) uses tether's
 * default framing, one message per step, each starting with a type byte:
 *
 *   sender -> receiver  'H' size (8 bytes, big-endian) name   the header
 *   receiver -> sender  'A' offset (8 bytes, big-endian)      where to start
 *   sender -> receiver  'D' bytes...                          the data, in chunks
 *   sender -> receiver  'T' sha256 (32 bytes)                 the trailer
 *   receiver -> sender  'R' status (1 byte: 0 ok) text        the verdict
 *
 * The offset is 0 unless the receiver runs with --resume and still has the
 * first part of the file from an interrupted transfer: then only the rest
 * is sent, and the SHA-256 still covers the whole file (the sender hashes
 * the part it skips), so a partial file that does not match is caught.
 *
 * What it shows:
 * - a file as a sequence of messages: the message boundaries carry the
 *   protocol, so no byte counting or escaping is needed;
 * - backpressure: chunks are queued until tether_conn_send_zc() returns
 *   TETHER_EAGAIN, and the rest follows from `on_drain`, so a file of any
 *   size is sent with at most the connection's high-water mark (1 MiB) of
 *   it in memory, as fast as the receiver takes it;
 * - zero-copy sends: each chunk is read into its own buffer, which the
 *   library frees (through the callback) once it has been written;
 * - OpenSSL's EVP interface for the SHA-256;
 * - progress on stderr: a bar redrawn in place on a terminal, plain lines
 *   (every 10 %) otherwise, so that logs stay readable.
 *
 * On success it prints `sent NAME: N bytes, sha256 HEX; verified by the
 * receiver` and exits with 0; on any failure one `error: ...` line on
 * stderr and exit status 1. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */
#include "common/file_common.h"

struct options {
    const char *connect_url;
    const char *file;
    const char *name; /* sent in the header; default: the file's base name */
    size_t chunk;
    enum progress_mode progress;
    struct cli_tls tls;
};

struct sender {
    const struct options *opt;
    tether_loop *loop;
    tether_conn *conn; /* NULL once its on_close has run */
    int fd;
    uint64_t size;
    uint64_t pos;    /* the next byte to send */
    uint64_t offset; /* where the receiver asked us to start */
    EVP_MD_CTX *md;
    uint8_t digest[32];
    bool digest_done; /* digest holds the final SHA-256 */
    uint8_t *chunk;   /* a chunk read but not yet accepted (after EAGAIN) */
    size_t chunk_len;
    enum {
        WAIT_ACCEPT,
        SENDING,
        WAIT_RESULT,
        DONE
    } phase;
    struct progress prog;
    bool finished;
    int status;
};

static const char usage[] =
    "usage: file_send --connect URL --file PATH [options]\n"
    "Sends a file to file_recv; the receiver checks its size and SHA-256.\n\n"
    "  --connect URL     tcp://HOST:PORT, tls://HOST:PORT or unix:///path\n"
    "  --file PATH       the file to send\n"
    "  --name NAME       the name to announce (default: the file's base name)\n"
    "  --chunk BYTES     bytes per message (default 65536, at most 8 MiB)\n"
    "  --progress MODE   auto (a bar on a terminal, lines otherwise; default),\n"
    "                    bar, lines or none\n" CLI_USAGE_TLS_CLIENT CLI_USAGE_COMMON;

/* ---- the transfer ----------------------------------------------------------- */

static void finish(struct sender *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports the outcome once: on success the connection closes gracefully,
 * on failure at once. */
static void finish(struct sender *s, int status, const char *fmt, ...)
{
    if (s->finished) {
        return;
    }
    s->finished = true;
    s->status = status;
    if (status != 0 && s->prog.mode == PROGRESS_BAR) {
        fputc('\n', stderr); /* leave the bar's line */
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(status == 0 ? stdout : stderr, fmt, ap);
    va_end(ap);
    if (status == 0) {
        tether_conn_close(s->conn);
    } else {
        tether_conn_abort(s->conn); /* NULL (already closed) is ignored */
    }
}

/* Reads exactly len bytes at off; false on an error or a file that shrank. */
static bool read_at(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return true;
}

/* Releases a chunk once the library has written it (or dropped it). */
static void chunk_free(void *data, void *ud)
{
    (void)ud;
    free(data);
}

/* Queues chunks until the file is done or the queue is full; `on_drain`
 * calls it again. Then the trailer with the SHA-256. */
static void pump(struct sender *s)
{
    while (s->phase == SENDING && !s->finished) {
        if (s->chunk == NULL && s->pos < s->size) {
            size_t n =
                s->size - s->pos < s->opt->chunk ? (size_t)(s->size - s->pos) : s->opt->chunk;
            s->chunk = malloc(1 + n);
            if (s->chunk == NULL) {
                finish(s, 1, "error: out of memory\n");
                return;
            }
            s->chunk[0] = 'D';
            errno = 0;
            if (!read_at(s->fd, s->chunk + 1, n, s->pos)) {
                finish(s, 1, "error: cannot read %s: %s\n", s->opt->file,
                       errno != 0 ? strerror(errno) : "the file shrank");
                return;
            }
            s->chunk_len = 1 + n;
            EVP_DigestUpdate(s->md, s->chunk + 1, n);
        }
        if (s->chunk != NULL) {
            /* Zero-copy: on success the library owns the buffer. */
            int rv = tether_conn_send_zc(s->conn, s->chunk, s->chunk_len, chunk_free, NULL);
            if (rv == TETHER_EAGAIN) {
                return; /* keep the chunk; on_drain brings us back */
            }
            if (rv != TETHER_OK) {
                free(s->chunk);
                s->chunk = NULL;
                if (rv != TETHER_ECLOSED) { /* ECLOSED: on_close says why */
                    finish(s, 1, "error: cannot send: %s\n", tether_strerror(rv));
                }
                return;
            }
            s->pos += s->chunk_len - 1;
            s->chunk = NULL;
            progress_update(&s->prog, s->pos, tether_loop_now(s->loop), false);
            continue;
        }
        /* Everything is queued: the trailer ends the file. */
        uint8_t trailer[1 + 32];
        if (!s->digest_done) {
            unsigned int dlen = 0;
            EVP_DigestFinal_ex(s->md, s->digest, &dlen);
            s->digest_done = true;
        }
        trailer[0] = 'T';
        memcpy(trailer + 1, s->digest, sizeof s->digest);
        int rv = tether_conn_send(s->conn, trailer, sizeof trailer);
        if (rv == TETHER_EAGAIN) {
            /* The last chunk may have taken the queue above the high-water
             * mark (a slow peer, or a busy machine): on_drain retries. */
            return;
        }
        if (rv != TETHER_OK && rv != TETHER_ECLOSED) {
            finish(s, 1, "error: cannot send the trailer: %s\n", tether_strerror(rv));
            return;
        }
        progress_update(&s->prog, s->pos, tether_loop_now(s->loop), true);
        s->phase = WAIT_RESULT;
    }
}

/* The receiver said where to start: hash what it already has, then send. */
static void start_sending(struct sender *s, uint64_t offset)
{
    if (offset > s->size) {
        finish(s, 1, "error: the receiver asked to resume at byte %llu of a %llu-byte file\n",
               (unsigned long long)offset, (unsigned long long)s->size);
        return;
    }
    s->offset = offset;
    uint8_t *buf = malloc(s->opt->chunk);
    for (uint64_t at = 0; buf != NULL && at < offset;) {
        size_t n = offset - at < s->opt->chunk ? (size_t)(offset - at) : s->opt->chunk;
        if (!read_at(s->fd, buf, n, at)) {
            free(buf);
            finish(s, 1, "error: cannot read %s\n", s->opt->file);
            return;
        }
        EVP_DigestUpdate(s->md, buf, n);
        at += n;
    }
    free(buf);
    if (offset > 0) {
        fprintf(stderr, "resuming at byte %llu\n", (unsigned long long)offset);
    }
    s->pos = offset;
    s->phase = SENDING;
    progress_start(&s->prog, s->opt->progress, s->size, tether_loop_now(s->loop));
    progress_update(&s->prog, s->pos, tether_loop_now(s->loop), false);
    pump(s);
}

static void on_connect(tether_conn *c, int status, void *ud)
{
    struct sender *s = ud;
    if (status != TETHER_OK) {
        const char *detail = tether_conn_last_error(c);
        finish(s, 1, "error: %s\n", detail[0] != '\0' ? detail : tether_strerror(status));
        return;
    }
    uint8_t hdr[1 + 8 + 256];
    size_t name_len = strlen(s->opt->name);
    if (name_len > 256) {
        name_len = 256;
    }
    hdr[0] = 'H';
    put_u64(hdr + 1, s->size);
    memcpy(hdr + 9, s->opt->name, name_len);
    int rv = tether_conn_send(c, hdr, 9 + name_len);
    if (rv != TETHER_OK) {
        finish(s, 1, "error: cannot send the header: %s\n", tether_strerror(rv));
    }
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct sender *s = ud;
    if (s->finished) {
        return;
    }
    if (len == 9 && data[0] == 'A' && s->phase == WAIT_ACCEPT) {
        start_sending(s, get_u64(data + 1));
    } else if (len >= 2 && data[0] == 'R' && s->phase == WAIT_RESULT) {
        char sum[65];
        hex(sum, s->digest, sizeof s->digest);
        if (data[1] == 0) {
            s->phase = DONE;
            finish(s, 0, "sent %s: %llu bytes%s, sha256 %s; verified by the receiver\n",
                   s->opt->name, (unsigned long long)s->size, s->offset > 0 ? " (resumed)" : "",
                   sum);
        } else {
            finish(s, 1, "error: the receiver rejected %s: %.*s\n", s->opt->name, (int)(len - 2),
                   (const char *)data + 2);
        }
    } else if (len >= 1 && data[0] == 'E') {
        finish(s, 1, "error: the receiver refused the transfer: %.*s\n", (int)(len - 1),
               (const char *)data + 1);
    } else {
        finish(s, 1, "error: unexpected %zu-byte message from the receiver\n", len);
    }
}

static void on_drain(tether_conn *c, void *ud)
{
    (void)c;
    pump(ud);
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct sender *s = ud;
    const char *detail = tether_conn_last_error(c);
    finish(s, 1, "error: connection closed after %llu of %llu bytes: %s\n",
           (unsigned long long)s->pos, (unsigned long long)s->size,
           detail[0] != '\0' ? detail : tether_strerror(reason));
    s->conn = NULL;
}

/* ---- options ----------------------------------------------------------------- */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_CONNECT = 256,
        OPT_FILE,
        OPT_NAME,
        OPT_CHUNK,
        OPT_PROGRESS
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"file", required_argument, NULL, OPT_FILE},
        {"name", required_argument, NULL, OPT_NAME},
        {"chunk", required_argument, NULL, OPT_CHUNK},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        CLI_LONGOPTS_TLS_CLIENT,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* cli_option() reports problems, in one line */
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        switch (ch) {
        case OPT_CONNECT:
            opt->connect_url = optarg;
            break;
        case OPT_FILE:
            opt->file = optarg;
            break;
        case OPT_NAME:
            opt->name = optarg;
            break;
        case OPT_CHUNK:
            if (!cli_parse_size(optarg, &opt->chunk) || opt->chunk == 0 ||
                opt->chunk > 8 * 1024 * 1024) {
                r = cli_bad_value("chunk", optarg, "a number of bytes from 1 to 8388608 (8 MiB)");
            }
            break;
        case OPT_PROGRESS:
            if (!parse_progress(optarg, &opt->progress)) {
                r = cli_bad_value("progress", optarg, "auto, bar, lines or none");
            }
            break;
        default:
            r = cli_option("file_send", usage, ch, argv, &opt->tls);
            break;
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? -1 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (opt->connect_url == NULL || opt->file == NULL) {
        fprintf(stderr, "error: %s is required (see --help)\n",
                opt->connect_url == NULL ? "--connect URL" : "--file PATH");
        return 1;
    }
    if (opt->name == NULL) {
        const char *slash = strrchr(opt->file, '/');
        opt->name = slash != NULL ? slash + 1 : opt->file;
    }
    return 0;
}

/* ---- main -------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options opt = {.chunk = 64 * 1024, .progress = PROGRESS_AUTO};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }

    struct sender s = {.opt = &opt, .phase = WAIT_ACCEPT, .status = 1};
    tether_tls_config *tls = NULL;
    s.fd = open(opt.file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (s.fd < 0 || fstat(s.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "error: cannot read %s: %s\n", opt.file,
                s.fd < 0 ? strerror(errno) : "not a regular file");
        goto out;
    }
    s.size = (uint64_t)st.st_size;
    s.md = EVP_MD_CTX_new();
    if (s.md == NULL || EVP_DigestInit_ex(s.md, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "error: cannot set up SHA-256\n");
        goto out;
    }
    rv = tether_loop_new(&s.loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loop: %s\n", tether_strerror(rv));
        goto out;
    }

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = &s;
    co.on_connect = on_connect;
    co.on_message = on_message;
    co.on_drain = on_drain;
    co.on_close = on_close;
    co.max_msg = opt.chunk + 1 > 4096 ? opt.chunk + 1 : 4096;
    tether_error err;
    /* TLS flags become a tether_tls_config (see common/cli.c); without
     * them a tls:// URL trusts the system's CAs. */
    if (!cli_tls_client(&opt.tls, opt.connect_url, &tls)) {
        goto out;
    }
    co.tls = tls;
    /* A malformed URL is reported here; everything else through on_connect. */
    rv = tether_conn_dial(&s.conn, s.loop, opt.connect_url, &co, &err);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        goto out;
    }
    s.status = 0;
    rv = tether_loop_run(s.loop);
    if (rv != TETHER_OK && !s.finished) {
        fprintf(stderr, "error: the event loop failed: %s\n", tether_strerror(rv));
        s.status = 1;
    }

out:
    tether_tls_config_unref(tls); /* the connection keeps its own reference */
    tether_loop_free(s.loop);
    free(s.chunk);
    EVP_MD_CTX_free(s.md);
    if (s.fd >= 0) {
        close(s.fd);
    }
    return s.status;
}
