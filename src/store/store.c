#include "store.h"

#include <stdlib.h>

void store_doc_release(struct store_doc *doc)
{
    if (doc == NULL)
        return;
    free(doc->id);
    free(doc->etag);
    if (doc->json != NULL)
        prov_freezero(doc->json, __builtin_strlen(doc->json)); /* may hold keys */
    free(doc->created);
    free(doc->updated);
    free(doc->group_id);
    free(doc->attestation);
    *doc = (struct store_doc){0};
}
