/* dashboard.h — the live dashboard page served by the admin listener
 * (docs/observability.md). */
#ifndef PT_ADMIN_DASHBOARD_H
#define PT_ADMIN_DASHBOARD_H

#include "core/common.h"

/* The page (static, not NUL-terminated in the slice). */
pt_str pt_dashboard_page(void);

#endif
