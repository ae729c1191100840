/* dashboard.c — the admin listener's live dashboard page (/dashboard).
 *
 * dashboard.html is one self-contained file (inline CSS and JavaScript, no
 * external asset: it works offline and needs no build step), embedded in
 * the binary as it is with the assembler's .incbin (the Makefile makes this
 * object depend on the HTML). The page polls /metrics and /api/reloads
 * every second with the admin token the user typed (kept in the tab's
 * sessionStorage) and computes rates and latency quantiles itself. */
#include "admin/dashboard.h"

__asm__(".section .rodata\n"
        ".global pt_dashboard_html\n"
        ".type pt_dashboard_html, @object\n"
        "pt_dashboard_html:\n"
        ".incbin \"src/admin/dashboard.html\"\n"
        ".global pt_dashboard_html_end\n"
        "pt_dashboard_html_end:\n"
        ".byte 0\n"
        ".previous\n");

extern const char pt_dashboard_html[];
extern const char pt_dashboard_html_end[];

pt_str pt_dashboard_page(void)
{
    return pt_str_make(pt_dashboard_html, (size_t)(pt_dashboard_html_end - pt_dashboard_html));
}
