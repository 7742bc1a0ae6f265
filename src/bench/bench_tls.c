/*
 * prov-bench client TLS: one SSL_CTX per thread that checks the server's
 * certificate (chain to --ca, and the host name or IP address) and never
 * resumes a session, and non-blocking TCP connects.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "bench.h"

static bool is_ip(const char *host);

SSL_CTX *tls_client_ctx(const struct bench_opts *o, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_VERIFY_PARAM *vp;

    if (ctx == NULL) {
        snprintf(err, errlen, "tls: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (o->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
        snprintf(err, errlen, "--ca %s: cannot load CA certificates", o->ca_file);
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    vp = SSL_CTX_get0_param(ctx);
    if (is_ip(o->host))
        X509_VERIFY_PARAM_set1_ip_asc(vp, o->host);
    else
        X509_VERIFY_PARAM_set1_host(vp, o->host, 0);
    return ctx;
}

static bool is_ip(const char *host)
{
    unsigned char ip[16];

    return inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
}

void tls_set_sni(SSL *ssl, const char *host)
{
    if (!is_ip(host))
        SSL_set_tlsext_host_name(ssl, host);
}

int tls_resolve(const char *host, const char *port, struct sockaddr_storage *sa, socklen_t *salen,
                char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s:%s: %s", host, port, gai_strerror(rc));
        return -1;
    }
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *salen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int bind_local(int fd, int family, const char *ip)
{
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET};

        if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
            return -EINVAL;
        return bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : -errno;
    }
    {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6};

        if (inet_pton(AF_INET6, ip, &a.sin6_addr) != 1)
            return -EINVAL;
        return bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : -errno;
    }
}

int tls_connect_fd(const struct sockaddr_storage *sa, socklen_t salen, const char *bind_ip)
{
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, rc;

    if (fd < 0)
        return -errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind_ip != NULL && (rc = bind_local(fd, sa->ss_family, bind_ip)) != 0) {
        close(fd);
        return rc;
    }
    if (connect(fd, (const struct sockaddr *)sa, salen) != 0 && errno != EINPROGRESS) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

const char *tls_error_reason(unsigned long e, const char *fallback)
{
    static _Thread_local char buf[128];
    const char *r = ERR_reason_error_string(e);

    if (r == NULL)
        return fallback;
    snprintf(buf, sizeof(buf), "%s", r);
    return buf;
}
