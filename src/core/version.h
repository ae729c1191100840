/* version.h — the version string (`portico version`, portico_build_info).
 * A build may override it with -DPORTICO_VERSION=... */
#ifndef PT_CORE_VERSION_H
#define PT_CORE_VERSION_H

#ifndef PORTICO_VERSION
#define PORTICO_VERSION "0.1.0"
#endif

#endif
