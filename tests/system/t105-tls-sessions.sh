#!/usr/bin/env bash
# TLS facts clients rely on: TLS 1.2 and 1.3 are offered, and a resumed session works
# even though provd requests client certificates (OpenSSL refuses resumption with an
# internal_error alert unless a session id context is set; Node 18 resumes sessions,
# so every Node 18 device failed before this was fixed).
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.105 t105

# s_client_request VERSIONFLAG SESSFLAG SESSFILE: one GET of an unknown operation over a
# fresh s_client; output in $T/sc.out.
s_client_request()
{
    # stdin stays open until provd answers and closes (Connection: close)
    { printf 'GET /%s/registrations/x/operations/y HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' \
        "$SCOPE" "$IP"; sleep 1; } |
        timeout 10 openssl s_client -connect "$IP:443" -CAfile "$CA" -quiet \
            "$1" "$2" "$3" >"$T/sc.out" 2>"$T/sc.err"
}

resume_case()
{
    local v=$1
    rm -f "$T/sess"
    s_client_request "$v" -sess_out "$T/sess" || true
    grep -q '^HTTP/1.1 401' "$T/sc.out" || fail "$v first connection: $(head -c 300 "$T/sc.out") $(head -c 300 "$T/sc.err")" || return 1
    [ -s "$T/sess" ] || fail "$v: no session saved" || return 1
    printf 'Q\n' | timeout 10 openssl s_client -connect "$IP:443" -CAfile "$CA" "$v" \
        -sess_in "$T/sess" >"$T/sc2.out" 2>&1 || true
    grep -q '^Reused' "$T/sc2.out" || fail "$v: session not resumed: $(grep -E 'New|Reused|alert|error' "$T/sc2.out" | head -5)" || return 1
    s_client_request "$v" -sess_in "$T/sess" || true
    grep -q '^HTTP/1.1 401' "$T/sc.out" ||
        fail "$v resumed connection: no answer: $(head -c 300 "$T/sc.out") $(head -c 300 "$T/sc.err")"
}

case_tls12() { resume_case -tls1_2; }
case_tls13() { resume_case -tls1_3; }

case_old_tls_refused()
{
    if printf 'Q\n' | timeout 10 openssl s_client -connect "$IP:443" -tls1_1 >"$T/sc.out" 2>&1; then
        grep -q 'Cipher is (NONE)\|no protocols available\|alert' "$T/sc.out" ||
            fail "TLS 1.1 handshake succeeded: $(head -c 300 "$T/sc.out")"
    fi
    return 0
}

add_case "TLS 1.2: a resumed session (client certificates requested) is accepted" case_tls12
add_case "TLS 1.3: a resumed session (client certificates requested) is accepted" case_tls13
add_case "TLS 1.1 is not offered" case_old_tls_refused
run_cases
