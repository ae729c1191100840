/* mtls_auth.h — private: the mtls_auth plugin (the consumer named by the
 * client certificate an mTLS listener verified).
 *
 *   consumers:
 *     - name: billing
 *       credentials:
 *         mtls:
 *           subject: "CN=billing,O=Acme"             # RFC 2253, as OpenSSL prints it
 *           san: ["URI:spiffe://acme/ns/prod/sa/billing", "DNS:billing.acme.internal"]
 *   routes:
 *     - plugins:
 *         - mtls_auth:
 *             identity: san          # subject (default) | cn | san
 *             san_types: [URI]       # identity san: which SANs count (default DNS, URI, email)
 *             consumer: credentials  # credentials (default) | name | ad_hoc
 *             groups: [workloads]    # consumer ad_hoc: the groups of every such consumer
 *
 * Only what the TLS layer verified is read (pt_txn_client_cert_subject /
 * _sans); no header is ever trusted. No certificate: pt_txn_auth_none
 * without a challenge. A certificate that maps to no consumer, or to two
 * different ones through two SANs, or whose identity is missing or not
 * acceptable: pt_txn_auth_reject (401). Lookups are O(1)
 * (pt_consumer_by_cert, pt_consumer_find). */
#ifndef PT_PLUGINS_MTLS_AUTH_H
#define PT_PLUGINS_MTLS_AUTH_H

#include "plugin/plugin.h"

typedef enum { PT_MTLS_ID_SUBJECT = 0, PT_MTLS_ID_CN, PT_MTLS_ID_SAN } pt_mtls_identity;
typedef enum { PT_MTLS_MAP_CREDENTIALS = 0, PT_MTLS_MAP_NAME, PT_MTLS_MAP_AD_HOC } pt_mtls_map;

enum { PT_MTLS_SAN_DNS = 1, PT_MTLS_SAN_URI = 2, PT_MTLS_SAN_EMAIL = 4 };

#define PT_MTLS_MAX_NAME 256 /* an ad-hoc consumer's name, bytes */

typedef struct {
    pt_mtls_identity identity;
    unsigned san_types;       /* PT_MTLS_SAN_* bits */
    pt_mtls_map map;
    const char **groups;      /* ad_hoc */
    size_t ngroups;
} pt_mtls_auth_conf;

extern const pt_plugin_type pt_plugin_mtls_auth;

/* The CN of an RFC 2253 subject ("CN=alice,O=Acme"), as written there
 * (escapes kept). 1 when found once, 0 when absent, -1 when the subject
 * has several CNs. */
int pt_mtls_subject_cn(pt_str subject, pt_str *cn);

#endif
