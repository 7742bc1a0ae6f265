/*
 * Hub allocation. "hashed" is weighted rendezvous hashing of the lower-case
 * registration id: every candidate hub gets the score -weight / ln(u), where u
 * in (0,1) comes from SHA-256(registrationId NUL hostname); the highest score
 * wins. It is deterministic, spreads devices in proportion to the weights, and
 * moves only the devices of a hub that is added or removed.
 */
#ifndef PROV_SERVER_ALLOC_H
#define PROV_SERVER_ALLOC_H

#include <stddef.h>

#include "config.h"

/* Index into hubs[] of the chosen hub, or -1 when n == 0. */
int alloc_hashed(const char *registration_id, const struct cfg_hub *const *hubs, size_t n);

#endif
