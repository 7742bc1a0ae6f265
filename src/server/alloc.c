#include "alloc.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

#include "../common/util.h"

static double unit_interval(const char *id, const char *host)
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    uint64_t v = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char lower[129];
    size_t n = strlen(id);

    if (n >= sizeof(lower))
        n = sizeof(lower) - 1;
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)id[i]);
    lower[n] = '\0';
    if (ctx == NULL || EVP_DigestInit_ex(ctx, prov_md_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, lower, n + 1) != 1 ||
        EVP_DigestUpdate(ctx, host, strlen(host)) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
        EVP_MD_CTX_free(ctx);
        return 0.5;
    }
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 8; i++)
        v = (v << 8) | md[i];
    /* 53 random bits, shifted off 0 so that ln(u) is finite and negative */
    return ((double)(v >> 11) + 0.5) / 9007199254740992.0;
}

int alloc_hashed(const char *registration_id, const struct cfg_hub *const *hubs, size_t n)
{
    int best = -1;
    double best_score = 0;

    for (size_t i = 0; i < n; i++) {
        double u = unit_interval(registration_id, hubs[i]->hostname);
        double score = -(double)(hubs[i]->weight ? hubs[i]->weight : 1) / log(u);

        if (best < 0 || score > best_score) {
            best = (int)i;
            best_score = score;
        }
    }
    return best;
}
