/* Every limit on untrusted input, in one place. */
#ifndef PROV_COMMON_LIMITS_H
#define PROV_COMMON_LIMITS_H

#define PROV_MAX_BODY (96 * 1024)           /* DPS message size limit */
#define PROV_MAX_HEADER_BYTES (16 * 1024)   /* request line plus headers */
#define PROV_MAX_HEADERS 64
#define PROV_MAX_URL 4096
#define PROV_MAX_REG_ID 128
#define PROV_MAX_CA_NAME 256            /* CA certificate names, as ARM */
#define PROV_MAX_SCOPE 64
#define PROV_MAX_SAS_TOKEN 2048
#define PROV_SAS_SKEW_SECONDS 300           /* tolerated clock skew for se */
#define PROV_MIN_KEY_BYTES 16
#define PROV_MAX_KEY_BYTES 64
#define PROV_GENERATED_KEY_BYTES 64
#define PROV_MAX_SYMKEY_GROUPS 100          /* per scope, as DPS */
#define PROV_DEFAULT_PAGE 100
#define PROV_MAX_PAGE 1000
#define PROV_MAX_CONN_PER_WORKER 20000
#define PROV_IDLE_TIMEOUT_SECONDS 120
#define PROV_OPERATION_TTL_SECONDS (24 * 3600)
/* MQTT: a register PUBLISH carries a 96 KB body plus its topic and headers */
#define PROV_MAX_MQTT_PACKET (PROV_MAX_BODY + 4096)
#define PROV_MQTT_CONNECT_TIMEOUT_SECONDS 10 /* TLS handshake plus CONNECT */
#define PROV_MQTT_MAX_RID 256               /* the $rid a device chooses, echoed back */

#endif
