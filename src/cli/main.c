/* main.c — the `portico` command line: run, check, proxy, version, help. */
#include <crypt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli/route_test.h"
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
            "  portico hash-password [--scheme yescrypt|bcrypt|sha512]\n"
            "                               read a password on stdin (no echo on a terminal),\n"
            "                               print the password_hash for a consumer's basic credential\n"
            "  portico hash-key             read an API key on stdin, print its key_sha256: line\n"
            "  portico route-test -c FILE METHOD URL [-H 'Name: value']...\n"
            "                               which route a request matches, the plugins that run in\n"
            "                               order, the target sent upstream, and why the other\n"
            "                               routes did not match (URL: http://HOST/PATH?Q or /PATH)\n"
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

static const char *find_opt(int argc, char **argv, const char *s1, const char *s2);

/* Reads one secret line from stdin into buf (at most cap - 1 bytes, the
 * trailing "\n" or "\r\n" dropped); echo is off while reading from a
 * terminal. Returns its length, or -1 (nothing read, too long, a NUL). */
static ssize_t read_secret(const char *prompt, char *buf, size_t cap)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    size_t n = 0;
    bool ok = true;
    int c;
    while ((c = getchar()) != EOF && c != '\n') {
        if (n + 1 >= cap || c == 0) ok = false;
        else buf[n++] = (char)c;
    }
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (n && buf[n - 1] == '\r') n--;
    buf[n] = '\0';
    return ok && n ? (ssize_t)n : -1;
}

/* `portico hash-password`: a crypt(3) hash of the password on stdin with a
 * fresh salt and libcrypt's default cost for the scheme. */
static int cmd_hash_password(int argc, char **argv)
{
    const char *scheme = find_opt(argc, argv, "--scheme", NULL);
    const char *prefix = "$y$";
    unsigned long cost = 0; /* libcrypt's default, except bcrypt's (5) is too cheap today */
    if (scheme && !strcmp(scheme, "bcrypt")) prefix = "$2b$", cost = 12;
    else if (scheme && !strcmp(scheme, "sha512")) prefix = "$6$";
    else if (scheme && strcmp(scheme, "yescrypt")) {
        fprintf(stderr, "portico hash-password: --scheme is yescrypt (default), bcrypt or sha512\n");
        return 2;
    }
    char pw[1024];
    ssize_t n = read_secret("password: ", pw, sizeof(pw));
    if (n < 0) {
        fprintf(stderr, "portico hash-password: expected one non-empty line (at most 1023 bytes, no NUL) on stdin\n");
        return 1;
    }
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    const char *h = NULL;
    if (cd && crypt_gensalt_rn(prefix, cost, NULL, 0, setting, sizeof(setting)))
        h = crypt_r(pw, setting, cd);
    explicit_bzero(pw, sizeof(pw));
    if (!h || h[0] == '*') {
        fprintf(stderr, "portico hash-password: libcrypt could not hash with %s\n", prefix);
        free(cd);
        return 1;
    }
    printf("password_hash: '%s'\n", h);
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return 0;
}

/* `portico hash-key`: the SHA-256 digest line of the API key on stdin. */
static int cmd_hash_key(void)
{
    char key[4096];
    ssize_t n = read_secret("key: ", key, sizeof(key));
    if (n < 16) {
        fprintf(stderr, "portico hash-key: expected one line of at least 16 characters on stdin\n");
        explicit_bzero(key, sizeof(key));
        return 1;
    }
    unsigned char d[32];
    unsigned int dl = sizeof(d);
    EVP_Digest(key, (size_t)n, d, &dl, EVP_sha256(), NULL);
    explicit_bzero(key, sizeof(key));
    printf("key_sha256: ");
    for (size_t i = 0; i < 32; i++) printf("%02x", d[i]);
    printf("\n");
    return 0;
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

/* `portico route-test -c FILE METHOD URL [-H 'Name: value']...` */
static int cmd_route_test(int argc, char **argv)
{
    const char *path = NULL, *pos[2] = {NULL, NULL};
    int npos = 0, nhdrs = 0;
    char **hdrs = calloc((size_t)argc, sizeof(*hdrs));
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "-H") && i + 1 < argc) hdrs[nhdrs++] = argv[++i];
        else if (argv[i][0] != '-' && npos < 2) pos[npos++] = argv[i];
        else {
            fprintf(stderr, "portico route-test: unexpected argument \"%s\"\n", argv[i]);
            npos = -1;
            break;
        }
    }
    if (!path || npos != 2) {
        fprintf(stderr, "usage: portico route-test -c FILE METHOD URL [-H 'Name: value']...\n");
        free(hdrs);
        return 2;
    }
    pt_generation *g = load(path, NULL);
    int rc = g ? pt_cli_route_test(g, pos[0], pos[1], hdrs, nhdrs) : 2;
    if (g) pt_generation_unref(g);
    free(hdrs);
    return rc;
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
    if (!strcmp(cmd, "hash-password")) return cmd_hash_password(argc, argv);
    if (!strcmp(cmd, "hash-key")) return cmd_hash_key();
    if (!strcmp(cmd, "route-test")) return cmd_route_test(argc, argv);
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
