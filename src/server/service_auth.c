/* placeholder */
typedef int prov_placeholder_service_auth;
