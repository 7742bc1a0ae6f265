/* placeholder */
typedef int prov_placeholder_alloc;
