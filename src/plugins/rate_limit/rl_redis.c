/* rl_redis.c — rate_limit's cluster mode: every decision is one Lua script
 * on a shared Redis (one round trip, pipelined with the worker's other
 * commands), so several Portico processes count against one limit.
 *
 * The script decides all the limits of a request at once and writes only
 * when every one allows it (no give-back needed), with the server's clock
 * (TIME), so gateways with skewed clocks still agree. GCRA keeps the
 * theoretical arrival time in a string key (expiring when nothing is owed);
 * the sliding window keeps {w, c, p} in a hash expiring after two windows.
 * Semantics are those of rl_table.c. */
#include "plugins/rate_limit/rate_limit.h"

#include <stdio.h>
#include <string.h>

/* KEYS[i]: one per limit; ARGV: 5 numbers per limit (algorithm 0 GCRA / 1
 * sliding window, requests, period µs, interval µs, queue). Returns 5
 * integers per limit: allowed, remaining, reset µs, retry-after µs, delay µs. */
static const char RL_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local res, sets, refused = {}, {}, false\n"
    "for i = 1, #KEYS do\n"
    "  local b = (i - 1) * 5\n"
    "  local algo, L, P = tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3])\n"
    "  local T, Q = tonumber(ARGV[b+4]), tonumber(ARGV[b+5])\n"
    "  local ok, rem, reset, retry, delay = 0, 0, 0, 0, 0\n"
    "  if algo == 0 then\n"
    "    local tat = tonumber(redis.call('GET', KEYS[i])) or 0\n"
    "    local ntat = math.max(tat, now) + T\n"
    "    local ahead = ntat - now\n"
    "    if ahead > P + Q * T then\n"
    "      reset = math.max(tat - now, 0)\n"
    "      retry = ahead - P - Q * T\n"
    "    else\n"
    "      ok = 1\n"
    "      if ahead > P then delay = ahead - P end\n"
    "      if ahead < P then rem = math.floor((P - ahead) / T) end\n"
    "      reset = ahead\n"
    "      sets[#sets + 1] = {0, KEYS[i], ntat, math.ceil(ahead / 1000) + 1}\n"
    "    end\n"
    "  else\n"
    "    local h = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')\n"
    "    local win = math.floor(now / P)\n"
    "    local into = now - win * P\n"
    "    local sw, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0\n"
    "    if sw == win then\n"
    "    elseif sw == win - 1 then p = c; c = 0\n"
    "    else p = 0; c = 0 end\n"
    "    local est = math.floor(p * (P - into) / P) + c\n"
    "    reset = P - into\n"
    "    if est + 1 > L then\n"
    "      if c + 1 <= L and p > 0 then\n"
    "        local room = (L - 1 - c) * P / p\n"
    "        local x = 0\n"
    "        if room < P then x = P - room end\n"
    "        if x > into then retry = math.ceil(x - into) else retry = 1 end\n"
    "      else\n"
    "        local room = P\n"
    "        if c > 0 then room = (L - 1) * P / c end\n"
    "        local y = 0\n"
    "        if room < P then y = P - room end\n"
    "        retry = (P - into) + math.ceil(y)\n"
    "      end\n"
    "    else\n"
    "      ok = 1\n"
    "      rem = L - est - 1\n"
    "      sets[#sets + 1] = {1, KEYS[i], win, c + 1, p, math.ceil(2 * P / 1000)}\n"
    "    end\n"
    "  end\n"
    "  if ok == 0 then refused = true end\n"
    "  res[#res + 1] = ok; res[#res + 1] = rem; res[#res + 1] = reset\n"
    "  res[#res + 1] = retry; res[#res + 1] = delay\n"
    "end\n"
    "if not refused then\n"
    "  for _, s in ipairs(sets) do\n"
    "    if s[1] == 0 then\n"
    "      redis.call('SET', s[2], string.format('%.0f', s[3]), 'PX', s[4])\n"
    "    else\n"
    "      redis.call('HSET', s[2], 'w', string.format('%.0f', s[3]), 'c', s[4], 'p', s[5])\n"
    "      redis.call('PEXPIRE', s[2], s[6])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return res\n";

const pt_redis_script *rl_redis_script(pt_conf_ctx *ctx) { return pt_conf_redis_script(ctx, RL_SCRIPT); }

bool rl_redis_start(pt_txn *txn, const rl_conf *c, rl_state *st, pt_str key, pt_redis_done_fn done,
                    pt_redis_error *err)
{
    pt_arena *a = pt_txn_arena(txn);
    const char *argv[RL_MAX_LIMITS * 6];
    size_t argvlen[RL_MAX_LIMITS * 6];
    int nkeys = 0;
    for (size_t i = 0; i < c->nlimits; i++) {
        if (!st->applied[i]) continue;
        const rl_limit_conf *l = &c->limits[i];
        /* prefix, the limit's identity (zone, name, what it counts), then the key bytes */
        size_t n = l->redis_prefix_len + key.n;
        char *k = pt_arena_alloc(a, n);
        memcpy(k, l->redis_prefix, l->redis_prefix_len);
        memcpy(k + l->redis_prefix_len, key.p, key.n);
        argv[nkeys] = k;
        argvlen[nkeys] = n;
        st->redis_index[nkeys] = (uint8_t)i;
        nkeys++;
    }
    int argc = nkeys;
    for (int j = 0; j < nkeys; j++) {
        const rl_limit *lim = &c->limits[st->redis_index[j]].lim;
        unsigned long long v[5] = {lim->algo == RL_GCRA ? 0 : 1, lim->requests, lim->period_us, lim->interval_us,
                                   lim->queue};
        for (int x = 0; x < 5; x++) {
            char *s = pt_arena_printf(a, "%llu", v[x]);
            argv[argc] = s;
            argvlen[argc] = strlen(s);
            argc++;
        }
    }
    st->redis_n = (uint8_t)nkeys;
    if (nkeys == 0) return false;
    return pt_txn_redis_eval(txn, c->redis, c->script, nkeys, argc, argv, argvlen, done, st, err);
}

bool rl_redis_verdicts(const pt_redis_reply *reply, rl_state *st)
{
    if (!reply || pt_redis_reply_kind(reply) != PT_REDIS_REPLY_ARRAY ||
        pt_redis_reply_count(reply) != (size_t)st->redis_n * 5)
        return false;
    for (size_t j = 0; j < st->redis_n; j++) {
        long long v[5];
        for (size_t x = 0; x < 5; x++) {
            const pt_redis_reply *e = pt_redis_reply_elem(reply, j * 5 + x);
            if (!e || pt_redis_reply_kind(e) != PT_REDIS_REPLY_INTEGER) return false;
            v[x] = pt_redis_reply_integer(e);
            if (v[x] < 0) v[x] = 0;
        }
        st->verdict[st->redis_index[j]] = (rl_verdict){.allowed = v[0] != 0,
                                                        .remaining = (uint64_t)v[1],
                                                        .reset_us = (uint64_t)v[2],
                                                        .retry_after_us = (uint64_t)v[3],
                                                        .delay_us = (uint64_t)v[4]};
    }
    /* refused: the script wrote nothing, so the allowed limits keep the request */
    bool refused = false;
    for (size_t j = 0; j < st->redis_n; j++) refused |= !st->verdict[st->redis_index[j]].allowed;
    for (size_t j = 0; refused && j < st->redis_n; j++)
        if (st->verdict[st->redis_index[j]].allowed) st->verdict[st->redis_index[j]].remaining++;
    return true;
}
