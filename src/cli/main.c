/* main.c — the `portico` command line: run, check, proxy, version, help. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/version.h"
#include "obs/metrics.h"
#include "proxy/generation.h"
#include "server/server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "portico %s — a fast, strict API gateway\n"
            "\n"
            "usage:\n"
            "  portico run -c FILE          run with a config file (same as: portico -c FILE)\n"
            "  portico check -c FILE        validate a config file; errors as FILE:LINE:COL: message\n"
            "  portico proxy --listen HOST:PORT --to URL[,URL...] [--ca FILE | --insecure]\n"
            "                               reverse proxy with no config file (round-robin);\n"
            "                               URLs are http://HOST:PORT or https://HOST[:PORT]\n"
            "                               (certificates verified against the system store\n"
            "                               or --ca; --insecure skips verification)\n"
            "  portico version              print the version\n"
            "  portico --help               this help\n"
            "\n"
            "signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the config file,\n"
            "         SIGUSR1 reopens the access log file.\n",
            PORTICO_VERSION);
}

static void print_errors(pt_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++) fprintf(stderr, "%s\n", errs->msgs[i]);
    pt_errors_free(errs);
}

/* Loads and builds a generation from a file; NULL after printing errors. */
static pt_generation *load(const char *path, pt_metrics *metrics)
{
    pt_errors errs = {0};
    pt_config *cfg = pt_config_load_file_metrics(path, metrics, &errs);
    pt_generation *g = cfg ? pt_generation_build(cfg, &errs) : NULL;
    if (!g) {
        if (!errs.n) fprintf(stderr, "%s: invalid configuration\n", path);
        print_errors(&errs);
        return NULL;
    }
    pt_errors_free(&errs);
    return g;
}

static const char *find_opt(int argc, char **argv, const char *s1, const char *s2)
{
    for (int i = 0; i < argc - 1; i++)
        if (strcmp(argv[i], s1) == 0 || (s2 && strcmp(argv[i], s2) == 0)) return argv[i + 1];
    return NULL;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], flag) == 0) return true;
    return false;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("portico %s\n", PORTICO_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "proxy")) {
        const char *listen = find_opt(argc, argv, "--listen", "-l");
        const char *to = find_opt(argc, argv, "--to", "-t");
        if (!listen || !to) {
            fprintf(stderr, "portico proxy: --listen HOST:PORT and --to URL[,URL...] are required\n");
            return 2;
        }
        pt_proxy_opts opts = {.listen = listen, .to = to, .ca = find_opt(argc, argv, "--ca", NULL),
                              .insecure = has_flag(argc, argv, "--insecure")};
        if (!opts.ca && has_flag(argc, argv, "--ca")) { /* "--ca" last: no FILE */
            fprintf(stderr, "portico proxy: --ca needs a FILE\n");
            return 2;
        }
        if (opts.ca && opts.insecure) {
            fprintf(stderr, "portico proxy: --ca and --insecure exclude each other\n");
            return 2;
        }
        if (opts.insecure) fprintf(stderr, "portico proxy: --insecure: upstream certificates are NOT verified\n");
        pt_errors errs = {0};
        pt_config *cfg = pt_config_for_proxy(&opts, &errs);
        pt_generation *g = cfg ? pt_generation_build(cfg, &errs) : NULL;
        if (!g) {
            print_errors(&errs);
            return 1;
        }
        pt_errors_free(&errs);
        return pt_server_run(g, NULL, NULL);
    }
    int argi = 1;
    bool check = false;
    if (!strcmp(cmd, "check")) {
        check = true;
        argi = 2;
    } else if (!strcmp(cmd, "run")) {
        argi = 2;
    }
    const char *path = find_opt(argc - argi + 1, argv + argi - 1, "-c", "--config");
    if (!path) {
        fprintf(stderr, "portico: missing -c FILE\n\n");
        usage(stderr);
        return 2;
    }
    if (check) {
        pt_generation *g = load(path, NULL);
        if (!g) return 1;
        printf("%s: ok\n", path);
        pt_generation_unref(g);
        return 0;
    }
    pt_metrics *metrics = pt_metrics_new();
    pt_generation *g = load(path, metrics);
    int rc = g ? pt_server_run(g, path, metrics) : 1;
    pt_metrics_free(metrics); /* every configuration is freed by now */
    return rc;
}
