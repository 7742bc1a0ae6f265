/* provd: the provisioning daemon. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/log.h"
#include "server.h"
#include "tpm_secret.h"

#define LOG_MODULE "main"

int main(int argc, char **argv)
{
    static struct server srv;
    char err[512] = "";
    bool exit_now = false;
    sigset_t set;

    if (config_load(&srv.cfg, argc, argv, &exit_now, err, sizeof(err)) != 0) {
        fprintf(stderr, "provd: %s\n", err);
        return 2;
    }
    if (exit_now)
        return 0;
    log_set_level((enum log_level)srv.cfg.log_level);
    /* made once in the data directory, shared by every worker and every start */
    if (tpm_secret_init(srv.cfg.data_dir, err, sizeof(err)) != 0) {
        fprintf(stderr, "provd: --data-dir: TPM secret: %s\n", err);
        return 2;
    }
    /* workers inherit this mask; the main thread takes the signals with sigwait */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (server_start(&srv, err, sizeof(err)) != 0) {
        fprintf(stderr, "provd: %s\n", err);
        server_free(&srv);
        return 2;
    }
    plog(LOG_INFO, "provd ready: %zu scope(s), %zu polic(ies), %zu hub(s)", srv.cfg.nscopes,
         srv.cfg.npolicies, srv.cfg.nhubs);
    server_wait(&srv);
    server_free(&srv);
    tpm_secret_forget();
    return 0;
}
