# The shop's binaries on one machine, in start order (the gateway last, once the
# services it calls are ready), with their ports as letsgo_facts::Component names
# them: sourced by up.sh, bench.sh and footprint.sh. A listed binary the
# workspace does not build yet is skipped by up.sh, so a new service needs only
# its line here.
#   binary          port  admin  readiness path (on the admin port; the gateway's on its port)
SERVICES=(
	"letsgo-user     9001  9101  /readyz"
	"letsgo-product  9002  9102  /readyz"
	"letsgo-cart     9003  9103  /readyz"
	"letsgo-order    9004  9104  /readyz"
	"letsgo-payment  9005  9105  /readyz"
	"letsgo-gateway  8888  9100  /health"
)

# readiness_url BINARY PORT ADMIN PATH [OFFSET]: where BINARY answers when ready,
# its ports moved by OFFSET (spare instances).
readiness_url() {
	local offset=${5:-0}
	if [[ $1 == letsgo-gateway ]]; then
		printf 'http://127.0.0.1:%s%s' $(($2 + offset)) "$4"
	else
		printf 'http://127.0.0.1:%s%s' $(($3 + offset)) "$4"
	fi
}
