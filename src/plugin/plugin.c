/* plugin.c — the plugin layer's side of configuration loading: turning a
 * plugin list entry into an instance through the registry
 * (plugins/registry.c), so that config/ never includes the plugin API;
 * and the metric declarations plugins make in configure. */
#include "plugin/plugin.h"

#include <stdio.h>

/* Records "unknown plugin" at `k`, listing the known ones. */
static void unknown_plugin(pt_conf_ctx *ctx, const pt_conf_node *k)
{
    char list[512];
    size_t used = 0;
    list[0] = '\0';
    const pt_plugin_type *const *all = pt_plugin_all();
    for (size_t i = 0; all && all[i] && used < sizeof(list); i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", all[i]->name);
    pt_conf_error(ctx, k, "unknown plugin '%s' (known plugins: %s)", k->scalar, used ? list : "none");
}

/* Arena cleanup: a plugin instance's destroy(), when its config goes. */
static void destroy_plugin_instance(void *data)
{
    const pt_plugin_instance *pi = data;
    pi->type->destroy(pi->conf);
}

bool pt_conf_plugin_instance(pt_conf_ctx *ctx, const pt_conf_node *k, const pt_conf_node *v, pt_plugin_instance *out)
{
    const pt_plugin_type *type = pt_plugin_find(k->scalar);
    if (!type) {
        unknown_plugin(ctx, k);
        return false;
    }
    void *conf = NULL;
    if (type->configure) {
        size_t before = ctx->errors->n;
        conf = type->configure(ctx, v);
        if (conf && type->destroy) {
            /* runs when the config's arena is freed: with its generation,
             * or at once when the load fails */
            pt_plugin_instance *owned = pt_arena_calloc(ctx->arena, sizeof(*owned));
            *owned = (pt_plugin_instance){.type = type, .conf = conf};
            pt_arena_on_cleanup(ctx->arena, destroy_plugin_instance, owned);
        }
        if (ctx->errors->n != before) return false;
    }
    *out = (pt_plugin_instance){.type = type, .conf = conf, .line = k->line, .name = type->name};
    return true;
}

pt_metric_series *pt_conf_metric(pt_conf_ctx *ctx, const pt_conf_node *node, const pt_metric_desc *desc,
                                 const char *const *values)
{
    /* Without an admin listener nothing is exposed, so nothing is counted
     * (docs/metrics.md): the plugin gets NULL series and its writes return
     * at once. */
    if (!ctx->metrics || !ctx->cfg || !ctx->cfg->admin.enabled) return NULL;
    char err[256];
    pt_metric_family *f = pt_metrics_family(ctx->metrics, desc, err, sizeof err);
    if (!f) {
        pt_conf_error(ctx, node, "metric %s: %s", desc->name ? desc->name : "(unnamed)", err);
        return NULL;
    }
    return pt_metrics_series(f, values, ctx->arena);
}
