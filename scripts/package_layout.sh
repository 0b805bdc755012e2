# Sourced by scripts that run on a machine where streamgen is not installed (a bare GPU machine).
# layout_package: copies the package, laid out as setup.py maps it (kernels/, server/, training/ inside
# streamgen/), into a new temp dir and prints that dir, for PYTHONPATH. Run from the repository root.
layout_package() {
  local site
  site=$(mktemp -d) || return 1
  cp -r streamgen "$site/streamgen" || return 1
  for part in kernels server training; do cp -r "$part" "$site/streamgen/$part" || return 1; done
  echo "$site"
}
