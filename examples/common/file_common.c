/* SPDX-License-Identifier: MIT */
/* Helpers shared by file_send.c and file_recv.c: the progress display and
 * the big-endian integers and hex digests of their protocol (described in
 * file_send.c). */
#include "common/file_common.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void human(char *buf, size_t len, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
}

void progress_start(struct progress *p, enum progress_mode mode, uint64_t total, uint64_t now_ms)
{
    if (mode == PROGRESS_AUTO) {
        mode = isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_LINES;
    }
    *p = (struct progress){.mode = mode, .total = total, .start_ms = now_ms, .last_tenth = -1};
}

void progress_update(struct progress *p, uint64_t done, uint64_t now_ms, bool final)
{
    int tenth = p->total == 0 ? 10 : (int)(done * 10 / p->total);
    char d[32], t[32];
    if (p->mode == PROGRESS_LINES) {
        if (tenth > p->last_tenth && (tenth < 10 || final)) {
            p->last_tenth = tenth;
            human(d, sizeof d, (double)done);
            human(t, sizeof t, (double)p->total);
            fprintf(stderr, "progress: %3d%% (%s of %s)\n", tenth * 10, d, t);
        }
    } else if (p->mode == PROGRESS_BAR && (final || now_ms - p->last_draw_ms >= 100)) {
        /* Redraw in place at most ten times a second. */
        p->last_draw_ms = now_ms;
        enum {
            WIDTH = 30
        };
        int fill = p->total == 0 ? WIDTH : (int)(done * WIDTH / p->total);
        char bar[WIDTH + 1];
        for (int i = 0; i < WIDTH; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[WIDTH] = '\0';
        double secs = (double)(now_ms - p->start_ms) / 1000.0;
        char rate[32];
        human(d, sizeof d, (double)done);
        human(t, sizeof t, (double)p->total);
        human(rate, sizeof rate, secs > 0 ? (double)done / secs : 0.0);
        int pct = p->total == 0 ? 100 : (int)(done * 100 / p->total);
        /* "\033[K" clears what a longer previous line left behind. */
        fprintf(stderr, "\r[%s] %3d%%  %s / %s%s%s%s\033[K%s", bar, pct, d, t, secs > 0 ? "  " : "",
                secs > 0 ? rate : "", secs > 0 ? "/s" : "", final ? "\n" : "");
    }
}

void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

void hex(char *out, const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

bool parse_progress(const char *s, enum progress_mode *out)
{
    static const char *const names[] = {"auto", "bar", "lines", "none"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum progress_mode)i;
            return true;
        }
    }
    return false;
}
