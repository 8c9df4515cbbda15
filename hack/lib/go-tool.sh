# Sourced by hack/build-<tool>.sh: build a Go tool pinned by hack/<tool>/go.mod into a cache outside the repo, once,
# and print the binary's path.
#   go_tool NAME ENV_VAR MODULE   (the caller defines build OUT VERSION, run inside hack/NAME with GOFLAGS set)
#   - $ENV_VAR naming an executable: used as is, nothing built.
#   - TGI_OPERATOR_CACHE overrides the cache root (default ~/.cache/tgi-operator).
# The cache key is MODULE's version and a hash of go.mod, go.sum and the folder's Go files: an edit to any rebuilds.
go_tool() {
  local name=$1 env_var=$2 module=$3
  local dir modfile version stamp out
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/$name"
  modfile="$dir/go.mod"
  if [[ -n "${!env_var:-}" ]]; then
    if [[ -x "${!env_var}" ]]; then echo "${!env_var}"; return 0; fi
    echo "$env_var=${!env_var} is not an executable file" >&2
    return 1
  fi
  version=$(awk -v m="$module" '($1=="require" && $2==m) {print $3; exit} ($1==m && $2 ~ /^v/) {print $2; exit}' "$modfile")
  [[ -n "$version" ]] || { echo "no $module version in $modfile" >&2; return 1; }
  stamp=$( { cat "$modfile" "$dir/go.sum"; cat "$dir"/*.go 2>/dev/null || true; } | sha256sum | cut -c1-12)
  out="${TGI_OPERATOR_CACHE:-$HOME/.cache/tgi-operator}/$name/$version/$stamp"
  if [[ -x "$out/$name" ]]; then echo "$out/$name"; return 0; fi
  command -v go >/dev/null || {
    echo "go is not on PATH and $out lacks $name: install Go >= 1.26 to build it once, or set $env_var to a built one" >&2
    return 1
  }
  mkdir -p "$out"
  echo "building $name ($module $version) into $out ..." >&2
  _go_tool_tmp=$(mktemp "$out/.$name.XXXXXX")  # atomic: a half-written binary is never cached
  trap 'rm -f "$_go_tool_tmp"' EXIT
  (cd "$dir" && GOFLAGS="${GOFLAGS:-} -mod=readonly" CGO_ENABLED=0 build "$_go_tool_tmp" "$version") >&2
  mv "$_go_tool_tmp" "$out/$name"
  echo "$out/$name"
}
