/* delay.c — holds a share of requests for a fixed time before letting them
 * continue, without blocking the worker: PAUSE + a pt_timer + resume. */
#include "plugins/delay/delay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/plugin_util.h"

/* Reads `percentage`: an int or float scalar in [0, 100]. */
static bool read_percentage(pt_conf_ctx *ctx, const pt_conf_node *n, double *out)
{
    if (n->kind != PT_NODE_SCALAR || n->scalar_len == 0) {
        pt_conf_error(ctx, n, "delay: 'percentage' must be a number between 0 and 100");
        return false;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(n->scalar, &end);
    if (errno || end != n->scalar + n->scalar_len || !isfinite(v) || v < 0 || v > 100) {
        pt_conf_error(ctx, n, "delay: 'percentage' must be a number between 0 and 100, got \"%s\"", n->scalar);
        return false;
    }
    *out = v;
    return true;
}

/* Validates {duration, percentage}. */
static void *delay_configure(pt_conf_ctx *ctx, const pt_conf_node *node)
{
    static const char *const allowed[] = {"duration", "percentage", "phase", NULL};
    if (!node || node->kind != PT_NODE_MAP) {
        pt_conf_error(ctx, node, "delay: expected a mapping with 'duration' (and optional 'percentage')");
        return NULL;
    }
    bool ok = pt_conf_check_keys(ctx, node, allowed, "delay");
    pt_delay_conf *c = pt_arena_calloc(ctx->arena, sizeof(*c));
    c->fraction = 1.0;

    const pt_conf_node *d = pt_conf_get(node, "duration");
    if (!d) {
        pt_conf_error(ctx, node, "delay: 'duration' is required");
        ok = false;
    } else if (!pt_conf_duration_ms(ctx, d, &c->duration_ms)) {
        ok = false;
    } else if (c->duration_ms > PT_DELAY_MAX_MS) {
        pt_conf_error(ctx, d, "delay: 'duration' must be at most 60s");
        ok = false;
    }
    const pt_conf_node *p = pt_conf_get(node, "percentage");
    double pct = 100;
    if (p && !read_percentage(ctx, p, &pct)) ok = false;
    c->fraction = pct / 100.0;
    const pt_conf_node *ph = pt_conf_get(node, "phase");
    if (ph) {
        static const char *const names[] = {"request", "request_body", "response", "response_body"};
        bool found = false;
        for (size_t i = 0; i < PT_ARRAY_LEN(names); i++) {
            if (ph->kind == PT_NODE_SCALAR && strcmp(ph->scalar, names[i]) == 0) {
                c->phase = (pt_delay_phase)i;
                found = true;
            }
        }
        if (!found) {
            pt_conf_error(ctx, ph, "delay: 'phase' must be one of request, request_body, response, response_body");
            ok = false;
        }
    }
    return ok ? c : NULL;
}

static void delay_fired(struct pt_loop *loop, pt_timer *t)
{
    pt_delay_state *st = t->data;
    pt_txn_resume(st->txn, st->side, PT_PLUGIN_CONTINUE);
}

/* The core dropped the pause (the response it held was replaced, or the
 * request ended): the timer must not resume a later pause. */
static void delay_pause_cancelled(pt_txn *txn, const void *conf, void *state, pt_side side)
{
    pt_delay_state *st = state;
    if (pt_timer_active(&st->timer)) pt_timer_stop(st->loop, &st->timer);
}

/* Arena cleanup: the request died (client gone, shutdown) while parked. */
static void delay_cancel(void *data)
{
    pt_delay_state *st = data;
    if (pt_timer_active(&st->timer)) pt_timer_stop(st->loop, &st->timer);
}

/* Parks the request on a timer (if this request is one of the delayed share). */
static pt_plugin_result delay_maybe_pause(pt_txn *txn, const pt_delay_conf *c, pt_delay_state *st)
{
    st->side = c->phase == PT_DELAY_RESPONSE || c->phase == PT_DELAY_RESPONSE_BODY ? PT_SIDE_RESPONSE : PT_SIDE_REQUEST;
    if (st->done) return PT_PLUGIN_CONTINUE;
    st->done = true;
    if (c->duration_ms == 0) return PT_PLUGIN_CONTINUE;
    if (c->fraction < 1.0 && (double)(pt_plugin_rand64() >> 11) * 0x1.0p-53 >= c->fraction)
        return PT_PLUGIN_CONTINUE;
    st->txn = txn;
    st->loop = pt_txn_loop(txn);
    pt_arena_on_cleanup(pt_txn_arena(txn), delay_cancel, st);
    pt_timer_start(st->loop, &st->timer, c->duration_ms, delay_fired, st);
    return PT_PLUGIN_PAUSE;
}

static pt_plugin_result delay_on_request_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_delay_conf *c = conf;
    return c->phase == PT_DELAY_REQUEST ? delay_maybe_pause(txn, c, state) : PT_PLUGIN_CONTINUE;
}

static pt_plugin_result delay_on_request_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    const pt_delay_conf *c = conf;
    return c->phase == PT_DELAY_REQUEST_BODY ? delay_maybe_pause(txn, c, state) : PT_PLUGIN_CONTINUE;
}

static pt_plugin_result delay_on_response_headers(pt_txn *txn, const void *conf, void *state)
{
    const pt_delay_conf *c = conf;
    return c->phase == PT_DELAY_RESPONSE ? delay_maybe_pause(txn, c, state) : PT_PLUGIN_CONTINUE;
}

static pt_plugin_result delay_on_response_body(pt_txn *txn, const void *conf, void *state, pt_body *body)
{
    const pt_delay_conf *c = conf;
    return c->phase == PT_DELAY_RESPONSE_BODY ? delay_maybe_pause(txn, c, state) : PT_PLUGIN_CONTINUE;
}

const pt_plugin_type pt_plugin_delay = {
    .name = "delay",
    .configure = delay_configure,
    .state_size = sizeof(pt_delay_state),
    .on_request_headers = delay_on_request_headers,
    .on_request_body = delay_on_request_body,
    .on_response_headers = delay_on_response_headers,
    .on_response_body = delay_on_response_body,
    .on_pause_cancelled = delay_pause_cancelled,
};
