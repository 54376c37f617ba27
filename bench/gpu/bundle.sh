#!/usr/bin/env bash
# bench/gpu/bundle.sh — build the GPU test binaries here (Release, sm_90) and
# pack them with every shared library a bare GPU host lacks, for
# bench/gpu/device_check.sh (see bench/gpu/README.md).
#
#   bench/gpu/bundle.sh [--no-build] [--no-test] [--jobs N]
#
# Output (ignored by git, carried to the device with carry=["bench/gpu/bundle-out"]):
#   bench/gpu/bundle-out/l2l-gpu-bundle.tar.xz   the bundle (unpacks to l2l-bundle/)
#   bench/gpu/bundle-out/MANIFEST.txt            what is in it, sizes, build info
# Staging tree (unpacked, for local tests): build-gpu/l2l-bundle/
#
# What the bundle holds and why:
#   bin/     cuda_device_test kernels_cuda_test kernels_cuda_sum_squares_test
#            layer_exec_cuda_test hf_fixture_exec_test gpu_step_test nccl_comm_test kernels_test
#   fixtures/hf  the transformers fixtures (tests/fixtures/hf)
#            l2l-train l2l-data gemm_rate (stripped)
#   lib/     the transitive closure (ldd) of those binaries and of the OpenMPI
#            components below, minus the base system (glibc, libstdc++,
#            libgcc_s) and minus the CUDA libraries the host has anyway:
#              libcuda.so.1 (the driver; must come from the host),
#              libcublas.so.13 + libcublasLt.so.13 (~600 MB) and libnccl.so.2
#              (~210 MB) are far over the 64 MiB carry limit; env.sh finds
#              them on the host (CUDA toolkit dirs, or the torch venv's
#              nvidia/cu13/lib and nvidia/nccl/lib wheels).
#            libcudart.so.13 (0.7 MB) IS carried: it is the exact runtime the
#            binaries were built against, and it keeps them independent of
#            which 13.x runtime the host has first on its path.
#   lib/fallback/  libstdc++.so.6 and libgcc_s.so.1 of this build machine;
#            env.sh adds them only when the host's libstdc++ lacks the newest
#            GLIBCXX version the binaries need.
#   openmpi/ MCA components (lib/openmpi3), help files (share/openmpi) and an
#            mca-params file (etc/): enough for singleton MPI_Init (one rank,
#            no mpirun, no orted: ess_singleton_isolated + pmix isolated).
#            Components that need fabrics (UCX, OFI, PSM, verbs), external PMIx
#            or OpenSHMEM are left out.
#   env.sh   source it: LD_LIBRARY_PATH, OPAL_* relocation, OMPI_MCA_* settings.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${L2L_GPU_BUILD_DIR:-$repo/build-gpu}
out=$here/bundle-out
stage=$build/l2l-bundle
jobs=1
do_build=1
do_test=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --no-test) do_test=0 ;;
    --jobs) jobs=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--no-test] [--jobs N]" >&2; exit 2 ;;
  esac
  shift
done

targets=(cuda_device_test kernels_cuda_test kernels_cuda_sum_squares_test layer_exec_cuda_test
         hf_fixture_exec_test gpu_step_test nccl_comm_test kernels_test l2l-train l2l-data gemm_rate)

# ---- 1. configure and build ------------------------------------------------
if [ "$do_build" = 1 ]; then
  nvcc=${CUDACXX:-/usr/local/cuda/bin/nvcc}
  cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DL2L_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  cmake --build "$build" -j"$jobs" --target "${targets[@]}"
fi

find_bin() {  # the built file of a target (tests live beside their sources)
  local f
  f=$(find "$build/bin" "$build/src" "$build/bench" -type f -name "$1" -perm -u+x 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "bundle.sh: target $1 not built under $build" >&2; exit 1; }
  echo "$f"
}

# ---- 2. stage ----------------------------------------------------------------
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib/fallback" "$stage/openmpi/lib/openmpi3" \
  "$stage/openmpi/share/openmpi" "$stage/openmpi/etc" "$stage/empty"
for t in "${targets[@]}"; do
  cp "$(find_bin "$t")" "$stage/bin/$t"
done
# The transformers fixtures hf_fixture_exec_test reads (L2L_FIXTURE_DIR).
mkdir -p "$stage/fixtures"
cp -r "$repo/tests/fixtures/hf" "$stage/fixtures/hf"

# OpenMPI's install dirs, as this build machine's libopen-pal knows them.
ompi_pkglibdir=$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
ompi_pkgdatadir=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
ompi_sysconfdir=$(ompi_info --path sysconfdir --parsable 2>/dev/null | sed -n 's/^path:sysconfdir://p')
: "${ompi_pkglibdir:=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3}"
: "${ompi_pkgdatadir:=/usr/share/openmpi}"
: "${ompi_sysconfdir:=/etc/openmpi}"

# Not carried: base system (the host has a newer glibc / libstdc++), the
# driver, and the big CUDA libraries the host has (see the header).
is_base() {
  case "$1" in
    linux-vdso.so.*|ld-linux-x86-64.so.*|libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|\
    librt.so.*|libresolv.so.*|libutil.so.*|libmvec.so.*) return 0 ;;
  esac
  return 1
}
is_fallback() { case "$1" in libstdc++.so.*|libgcc_s.so.*) return 0 ;; esac; return 1; }
is_host_cuda() {
  case "$1" in libcuda.so.*|libcublas.so.*|libcublasLt.so.*|libnccl.so.*|libnvidia-*) return 0 ;; esac
  return 1
}
# OpenMPI components left out: fabrics, external PMIx, OpenSHMEM, monitoring.
skip_component() {
  case "$(basename "$1")" in
    *ucx*|*ofi*|*psm*|*openib*|*verbs*|mca_pmix_ext*|mca_pmix_flux*|mca_reachable_netlink*|\
    mca_atomic_*|mca_memheap_*|mca_scoll_*|mca_spml_*|mca_sshmem_*|*monitoring*|mca_btl_sm.so) return 0 ;;
  esac
  # Anything else whose libraries this machine cannot resolve is useless too.
  ldd "$1" 2>/dev/null | grep -q "not found" && return 0
  return 1
}

declare -A copied=()
copy_deps() {  # copy the ldd closure of $1 into lib/ (or lib/fallback/)
  local line name path
  while read -r line; do
    name=$(awk '{print $1}' <<<"$line")
    path=$(awk '$2 == "=>" {print $3}' <<<"$line")
    [ -n "$path" ] && [ "$path" != "not" ] || continue
    is_base "$name" && continue
    is_host_cuda "$name" && continue
    [ -n "${copied[$name]:-}" ] && continue
    copied[$name]=1
    if is_fallback "$name"; then
      cp -L "$path" "$stage/lib/fallback/$name"
    else
      cp -L "$path" "$stage/lib/$name"
    fi
  done < <(ldd "$1")
}

ncomp=0
for c in "$ompi_pkglibdir"/*.so; do
  skip_component "$c" && continue
  cp -L "$c" "$stage/openmpi/lib/openmpi3/"
  ncomp=$((ncomp + 1))
done
cp -r "$ompi_pkgdatadir"/. "$stage/openmpi/share/openmpi/"
# Debian's defaults, minus nothing: they exclude fabrics we do not carry anyway.
[ -f "$ompi_sysconfdir/openmpi-mca-params.conf" ] &&
  cp "$ompi_sysconfdir/openmpi-mca-params.conf" "$stage/openmpi/etc/"

for f in "$stage"/bin/* "$stage"/openmpi/lib/openmpi3/*.so; do copy_deps "$f"; done
# libcudart is carried on purpose (see the header), and it is a dependency anyway.
cudart=$(ldd "$stage/bin/cuda_device_test" | awk '$1 ~ /^libcudart\.so/ {print $3}')
[ -n "$cudart" ] && cp -L "$cudart" "$stage/lib/"
# The closure of what we copied (a library's own deps not seen by the binaries).
for f in "$stage"/lib/*.so*; do copy_deps "$f"; done

# ---- 3. strip ----------------------------------------------------------------
strip --strip-unneeded "$stage"/bin/* 2>/dev/null || true
find "$stage/lib" "$stage/openmpi/lib" -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true

# ---- 4. env.sh -----------------------------------------------------------------
need_glibcxx=$(for f in "$stage"/bin/* "$stage"/lib/*.so*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBCXX_3\.4\.[0-9]*' | sort -uV | tail -1)
need_glibc=$(for f in "$stage"/bin/* "$stage"/lib/*.so* "$stage"/openmpi/lib/openmpi3/*.so; do
  objdump -T "$f" 2>/dev/null; done | grep -o 'GLIBC_2\.[0-9]*' | sort -uV | tail -1)
cat >"$stage/env.sh" <<EOF
# Source me (bash): sets up the l2l GPU bundle in this folder. Generated by bench/gpu/bundle.sh.
# Needs on the host: the NVIDIA driver (libcuda.so.1), cuBLAS 13 (libcublas.so.13,
# libcublasLt.so.13) and NCCL 2 (libnccl.so.2), from a CUDA toolkit dir or from
# python3's nvidia/cu13 and nvidia/nccl wheels (the torch venv). glibc >= ${need_glibc#GLIBC_}.
L2L_BUNDLE=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)
export L2L_BUNDLE
_l2l_need_glibcxx=${need_glibcxx}
_l2l_path="\$L2L_BUNDLE/lib"

# libstdc++ / libgcc_s: the host's unless it is older than what we need.
_l2l_stdcxx=
for _d in \$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print \$NF}') \\
    /lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do
  [ -e "\$_d" ] && { _l2l_stdcxx=\$_d; break; }
done
if [ -z "\$_l2l_stdcxx" ] || ! grep -qa "\$_l2l_need_glibcxx" "\$_l2l_stdcxx" 2>/dev/null; then
  _l2l_path="\$_l2l_path:\$L2L_BUNDLE/lib/fallback"
  echo "l2l bundle: host libstdc++ lacks \$_l2l_need_glibcxx; using the bundle's" >&2
fi

# cuBLAS and NCCL from the host: the first dir that has each. L2L_HOST_CUDA_LIBS
# (colon-separated) is searched first.
_l2l_cands="\${L2L_HOST_CUDA_LIBS:-}"
for _d in \${CUDA_HOME:-} /usr/local/cuda /usr/local/cuda-13*; do
  [ -n "\$_d" ] && _l2l_cands="\$_l2l_cands:\$_d/lib64:\$_d/lib:\$_d/targets/x86_64-linux/lib"
done
_l2l_cands="\$_l2l_cands:/usr/lib/x86_64-linux-gnu"
for _py in python3 /opt/torch/.venv/bin/python3; do
  _sp=\$(command -v "\$_py" >/dev/null 2>&1 && "\$_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) || _sp=
  [ -n "\$_sp" ] && _l2l_cands="\$_l2l_cands:\$_sp/nvidia/cu13/lib:\$_sp/nvidia/cublas/lib:\$_sp/nvidia/nccl/lib"
done
L2L_HOST_CUBLAS_DIR=; L2L_HOST_NCCL_DIR=
IFS=: read -r -a _l2l_arr <<<"\$_l2l_cands"
for _d in "\${_l2l_arr[@]}"; do
  [ -n "\$_d" ] || continue
  [ -z "\$L2L_HOST_CUBLAS_DIR" ] && [ -e "\$_d/libcublas.so.13" ] && [ -e "\$_d/libcublasLt.so.13" ] && L2L_HOST_CUBLAS_DIR=\$_d
  [ -z "\$L2L_HOST_NCCL_DIR" ] && [ -e "\$_d/libnccl.so.2" ] && L2L_HOST_NCCL_DIR=\$_d
done
export L2L_HOST_CUBLAS_DIR L2L_HOST_NCCL_DIR
[ -n "\$L2L_HOST_CUBLAS_DIR" ] || echo "l2l bundle: libcublas.so.13 not found on this host (set L2L_HOST_CUDA_LIBS)" >&2
[ -n "\$L2L_HOST_NCCL_DIR" ] || echo "l2l bundle: libnccl.so.2 not found on this host (set L2L_HOST_CUDA_LIBS)" >&2
for _d in "\$L2L_HOST_CUBLAS_DIR" "\$L2L_HOST_NCCL_DIR"; do
  [ -n "\$_d" ] && case ":\$_l2l_path:" in *":\$_d:"*) ;; *) _l2l_path="\$_l2l_path:\$_d" ;; esac
done
# The driver's libcuda.so.1: normally known to ldconfig or already on LD_LIBRARY_PATH;
# else a usual driver dir (never carried: it must match the kernel module).
if ! (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  for _d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib64 /usr/lib/wsl/lib; do
    [ -e "\$_d/libcuda.so.1" ] && { _l2l_path="\$_l2l_path:\$_d"; break; }
  done
fi
export LD_LIBRARY_PATH="\$_l2l_path\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="\$L2L_BUNDLE/bin:\$PATH"

# OpenMPI, relocated into the bundle; singleton init without orted or PMIx.
export OPAL_PREFIX="\$L2L_BUNDLE/openmpi"
export OPAL_LIBDIR="\$L2L_BUNDLE/lib"
export OPAL_PKGLIBDIR="\$L2L_BUNDLE/openmpi/lib/openmpi3"
export OPAL_DATADIR="\$L2L_BUNDLE/openmpi/share"
export OPAL_PKGDATADIR="\$L2L_BUNDLE/openmpi/share/openmpi"
export OPAL_SYSCONFDIR="\$L2L_BUNDLE/openmpi/etc"
export OMPI_MCA_mca_base_component_path="\$L2L_BUNDLE/openmpi/lib/openmpi3"
export OMPI_MCA_mca_base_param_files="\$L2L_BUNDLE/openmpi/etc/openmpi-mca-params.conf"
export OMPI_MCA_ess_singleton_isolated=1
export OMPI_MCA_pmix=isolated
export OMPI_MCA_pml=ob1
export OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_btl_base_warn_component_unused=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# hwloc: no plugins (the host has none of this machine's hwloc plugin dir).
export HWLOC_PLUGINS_PATH="\$L2L_BUNDLE/empty"
export OMP_WAIT_POLICY=\${OMP_WAIT_POLICY:-passive}
unset _l2l_path _l2l_cands _l2l_arr _l2l_stdcxx _l2l_need_glibcxx _d _py _sp
EOF

# ---- 5. pack -------------------------------------------------------------------
rm -rf "$out"
mkdir -p "$out"
stage_kib=$(du -sk "$stage" | cut -f1)
tar -C "$build" -cf - l2l-bundle | xz -6 -T1 >"$out/l2l-gpu-bundle.tar.xz"
{
  echo "l2l GPU bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) from commit $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- 2>/dev/null || echo '+dirty')"
  echo "nvcc: $("${CUDACXX:-/usr/local/cuda/bin/nvcc}" --version | tail -2 | head -1)"
  echo "CUDA architectures: $(grep -m1 '^CMAKE_CUDA_ARCHITECTURES' "$build/CMakeCache.txt" | cut -d= -f2)"
  echo "needs on the host: $need_glibc, $need_glibcxx (else lib/fallback), libcuda.so.1, libcublas.so.13, libcublasLt.so.13, libnccl.so.2"
  echo "unpacked: $((stage_kib / 1024)) MiB; packed: $(du -k "$out/l2l-gpu-bundle.tar.xz" | cut -f1) KiB; OpenMPI components: $ncomp"
  echo
  (cd "$stage" && find . -type f -printf '%10s  %p\n' | sort -k2)
} >"$out/MANIFEST.txt"
sha256sum "$out/l2l-gpu-bundle.tar.xz" | awk '{print $1}' >"$out/l2l-gpu-bundle.sha256"
echo "bundle: $out/l2l-gpu-bundle.tar.xz ($(du -h "$out/l2l-gpu-bundle.tar.xz" | cut -f1) packed, $((stage_kib / 1024)) MiB unpacked)"
du -sh "$out"

# ---- 6. test here (no GPU): see bench/gpu/test_bundle_here.sh --------------------
if [ "$do_test" = 1 ]; then
  bash "$here/test_bundle_here.sh"
fi
