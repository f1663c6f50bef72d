#!/bin/sh
# SPDX-License-Identifier: MIT
# Makes the TEST-ONLY certificates that tether's tests and examples use.
# These keys protect nothing: they are public in the repository. See
# README.md in this folder for what each file is and how to make real ones.
#
#   ca.pem / ca.key                 "tether test CA", trusted by the tests
#   server.pem / server.key         CN=localhost, SAN localhost, 127.0.0.1, ::1
#   server2.pem / server2.key       the same names, CN=tether test server 2
#                                   (certificate reload tests)
#   alt.pem / alt.key               SAN alt.localhost (SNI selection tests)
#   client.pem / client.key         CN=alice, a client certificate (mutual TLS)
#   bob.pem / bob.key               CN=bob, a second client (the chat example)
#   expired.pem / expired.key       server names, expired in 2001
#   future.pem / future.key         server names, not valid before 2090
#   wronghost.pem / wronghost.key   valid, but only for wrong.example
#   other-ca.pem / other-ca.key     "tether untrusted CA": nothing trusts it
#   untrusted.pem / untrusted.key   server names, issued by other-ca
#   untrusted-client.pem / .key     CN=mallory, issued by other-ca
#   spiffe.pem / spiffe.key         CN=workload, a client certificate whose
#                                   only SAN is the SPIFFE ID
#                                   URI:spiffe://tether.test/ns/prod/sa/worker
#   long.pem / long.key             server names plus a subject and SANs too
#                                   long for tether_tls_info's 256-byte fields
#
# Keys are EC P-256 (fast handshakes), unencrypted PKCS#8. Everything but the
# expired and future certificates is valid for 20 years from one day ago.
#
# Usage: certs/make-certs.sh [DIR [NAME...]]
#   DIR defaults to the directory of this script. With NAMEs, only those
#   certificates are made, issued by the CAs already in DIR, and nothing
#   else changes (e.g. `certs/make-certs.sh certs spiffe`).
set -eu
dir=${1:-$(cd "$(dirname "$0")" && pwd)}
[ $# -gt 0 ] && shift
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

start=$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)
end=$(date -u -d '1 day ago + 20 years' +%Y%m%d%H%M%SZ)

mkdir "$tmp/db"
: >"$tmp/db/index.txt"
cat >"$tmp/ca.cnf" <<CNF
[ ca ]
default_ca = testca
[ testca ]
dir             = $tmp/db
database        = $tmp/db/index.txt
new_certs_dir   = $tmp/db
rand_serial     = yes
default_md      = sha256
policy          = anything
unique_subject  = no
copy_extensions = none
[ anything ]
organizationName       = optional
organizationalUnitName = optional
commonName             = supplied
[ v3_ca ]
basicConstraints     = critical,CA:TRUE
keyUsage             = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ v3_server ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ v3_alt ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:alt.localhost
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ v3_wronghost ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:wrong.example
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ v3_client ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ v3_spiffe ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = clientAuth,serverAuth
subjectAltName         = URI:spiffe://tether.test/ns/prod/sa/worker
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
[ v3_long ]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost,IP:127.0.0.1,IP:::1,DNS:a-rather-long-service-name-number-one.tether.test,DNS:a-rather-long-service-name-number-two.tether.test,DNS:a-rather-long-service-name-number-three.tether.test,DNS:a-rather-long-service-name-number-four.tether.test,DNS:a-rather-long-service-name-number-five.tether.test,URI:spiffe://tether.test/ns/prod/sa/long
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
CNF

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1"
}

# sign NAME SUBJECT EXTENSIONS ISSUER [START END]: makes NAME.key and NAME.pem
# issued by ISSUER (ISSUER.pem / ISSUER.key; "self" for a self-signed CA).
sign() {
    name=$1 subj=$2 ext=$3 issuer=$4
    s=${5:-$start} e=${6:-$end}
    newkey "$tmp/$name.key"
    openssl req -new -key "$tmp/$name.key" -subj "$subj" -out "$tmp/$name.csr"
    if [ "$issuer" = self ]; then
        set -- -selfsign -keyfile "$tmp/$name.key"
    else
        set -- -cert "$tmp/$issuer.pem" -keyfile "$tmp/$issuer.key"
    fi
    openssl ca -batch -notext -config "$tmp/ca.cnf" "$@" -startdate "$s" -enddate "$e" \
        -extensions "$ext" -in "$tmp/$name.csr" -out "$tmp/$name.pem" 2>"$tmp/log" ||
        { cat "$tmp/log" >&2; exit 1; }
}

long_ou="a long organisational unit name, to make the subject long"
make_one() {
    case $1 in
    ca) sign ca "/O=tether/CN=tether test CA" v3_ca self ;;
    other-ca) sign other-ca "/O=tether/CN=tether untrusted CA" v3_ca self ;;
    server) sign server "/O=tether/CN=localhost" v3_server ca ;;
    server2) sign server2 "/O=tether/CN=tether test server 2" v3_server ca ;;
    alt) sign alt "/O=tether/CN=alt.localhost" v3_alt ca ;;
    client) sign client "/O=tether/CN=alice" v3_client ca ;;
    bob) sign bob "/O=tether/CN=bob" v3_client ca ;;
    expired) sign expired "/O=tether/CN=localhost (expired)" v3_server ca 20000101000000Z \
        20010101000000Z ;;
    future) sign future "/O=tether/CN=localhost (future)" v3_server ca 20900101000000Z \
        20910101000000Z ;;
    wronghost) sign wronghost "/O=tether/CN=wrong.example" v3_wronghost ca ;;
    untrusted) sign untrusted "/O=tether/CN=localhost (untrusted)" v3_server other-ca ;;
    untrusted-client) sign untrusted-client "/O=tether/CN=mallory" v3_client other-ca ;;
    spiffe) sign spiffe "/O=tether/CN=workload" v3_spiffe ca ;;
    long) sign long "/O=tether/OU=$long_ou 1/OU=$long_ou 2/OU=$long_ou 3/OU=$long_ou 4/OU=$long_ou 5/CN=localhost" \
        v3_long ca ;;
    *)
        echo "make-certs: no certificate named '$1'" >&2
        exit 2
        ;;
    esac
}

if [ $# -gt 0 ]; then
    # Only the named ones, from the CAs already there.
    cp "$dir/ca.pem" "$dir/ca.key" "$dir/other-ca.pem" "$dir/other-ca.key" "$tmp/"
    for n in "$@"; do
        make_one "$n"
        openssl verify -CAfile "$tmp/ca.pem" "$tmp/$n.pem" >/dev/null 2>&1 ||
            openssl verify -CAfile "$tmp/other-ca.pem" "$tmp/$n.pem" >/dev/null
    done
    for n in "$@"; do
        cp "$tmp/$n.pem" "$tmp/$n.key" "$dir/"
        chmod 644 "$dir/$n.pem" "$dir/$n.key"
    done
    echo "make-certs: wrote $* to $dir" >&2
    exit 0
fi

for n in ca other-ca server server2 alt client bob expired future wronghost untrusted \
    untrusted-client spiffe long; do
    make_one "$n"
done

# Sanity checks: the good ones verify, the bad ones fail for their reason.
openssl verify -CAfile "$tmp/ca.pem" -purpose sslserver "$tmp/server.pem" "$tmp/server2.pem" \
    "$tmp/alt.pem" >/dev/null
openssl verify -CAfile "$tmp/ca.pem" -purpose sslclient "$tmp/client.pem" "$tmp/bob.pem" \
    >/dev/null
if openssl verify -CAfile "$tmp/ca.pem" "$tmp/expired.pem" >/dev/null 2>&1; then
    echo "make-certs: expired.pem unexpectedly verifies" >&2
    exit 1
fi
if openssl verify -CAfile "$tmp/ca.pem" "$tmp/untrusted.pem" >/dev/null 2>&1; then
    echo "make-certs: untrusted.pem unexpectedly verifies" >&2
    exit 1
fi

for n in ca other-ca server server2 alt client bob expired future wronghost untrusted \
    untrusted-client spiffe long; do
    cp "$tmp/$n.pem" "$tmp/$n.key" "$dir/"
    chmod 644 "$dir/$n.pem" "$dir/$n.key"
done
echo "make-certs: wrote test certificates to $dir" >&2
