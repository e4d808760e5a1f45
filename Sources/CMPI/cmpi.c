// CMPI: see include/cmpi.h.
#include "cmpi.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

// MPI_THREAD_FUNNELED is 1 in both Open MPI and MPICH; MPI_MAX_LIBRARY_VERSION_STRING is at most 8192.
#define LP_THREAD_FUNNELED 1

// MPICH ABI handles (mpi.h of MPICH, Intel MPI, MVAPICH: libmpi.so.12).
#define MPICH_COMM_WORLD 0x44000000
#define MPICH_FLOAT 0x4c00040a
#define MPICH_DOUBLE 0x4c00080b
#define MPICH_SUM 0x58000003
#define MPICH_MAX 0x58000001

typedef int (*init_thread_fn)(int *, char ***, int, int *);
typedef int (*finalize_fn)(void);
typedef int (*version_fn)(char *, int *);
// Open MPI: handles are pointers.
typedef int (*o_rank_fn)(void *, int *);
typedef int (*o_allreduce_fn)(const void *, void *, int, void *, void *, void *);
typedef int (*o_barrier_fn)(void *);
typedef int (*o_abort_fn)(void *, int);
// MPICH: handles are ints.
typedef int (*m_rank_fn)(int, int *);
typedef int (*m_allreduce_fn)(const void *, void *, int, int, int, int);
typedef int (*m_barrier_fn)(int);
typedef int (*m_abort_fn)(int, int);

static void *lib;
static int ompi;  // 1: Open MPI handles, 0: MPICH ABI
static char libname[512], version[512];
static int rank_ = 0, size_ = 1;
static void *o_comm, *o_float, *o_double, *o_sum, *o_max;
static void *f_rank, *f_size, *f_allreduce, *f_barrier, *f_abort;
static finalize_fn f_finalize;

static int fail(char *err, size_t n, const char *fmt, const char *a, const char *b) {
    snprintf(err, n, fmt, a, b);
    if (lib) { dlclose(lib); lib = NULL; }
    return -1;
}

int lp_mpi_init(const char *path, char *err, size_t errlen) {
    const char *names[] = {"libmpi.so.40", "libmpi.so.12", "libmpi.so", "libmpich.so.12"};
    char tried[1024] = "", last[512] = "";
    if (path && *path) {
        lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (!lib) { const char *e = dlerror(); return fail(err, errlen, "cannot load %s (%s)", path, e ? e : "?"); }
        snprintf(libname, sizeof libname, "%s", path);
    } else {
        for (size_t i = 0; i < sizeof names / sizeof *names && !lib; i++) {
            // RTLD_GLOBAL: Open MPI's components, themselves dlopened, resolve libmpi's symbols through it.
            lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
            size_t l = strlen(tried);
            snprintf(tried + l, sizeof tried - l, "%s%s", l ? ", " : "", names[i]);
            if (lib) snprintf(libname, sizeof libname, "%s", names[i]);
            else { const char *e = dlerror(); snprintf(last, sizeof last, "%s", e ? e : "?"); }
        }
        if (!lib) return fail(err, errlen, "no MPI library loads (tried %s; last: %s)", tried, last);
    }
    init_thread_fn init = (init_thread_fn)dlsym(lib, "MPI_Init_thread");
    f_finalize = (finalize_fn)dlsym(lib, "MPI_Finalize");
    f_rank = dlsym(lib, "MPI_Comm_rank");
    f_size = dlsym(lib, "MPI_Comm_size");
    f_allreduce = dlsym(lib, "MPI_Allreduce");
    f_barrier = dlsym(lib, "MPI_Barrier");
    f_abort = dlsym(lib, "MPI_Abort");
    version_fn ver = (version_fn)dlsym(lib, "MPI_Get_library_version");
    if (!init || !f_finalize || !f_rank || !f_size || !f_allreduce || !f_barrier || !f_abort)
        return fail(err, errlen, "%s lacks the MPI functions lora-train calls (MPI_Init_thread, MPI_Allreduce, ...)%s", libname, "");
    o_comm = dlsym(lib, "ompi_mpi_comm_world");
    ompi = o_comm != NULL;
    if (ompi) {
        o_float = dlsym(lib, "ompi_mpi_float");
        o_double = dlsym(lib, "ompi_mpi_double");
        o_sum = dlsym(lib, "ompi_mpi_op_sum");
        o_max = dlsym(lib, "ompi_mpi_op_max");
        if (!o_float || !o_double || !o_sum || !o_max)
            return fail(err, errlen, "%s looks like Open MPI but lacks ompi_mpi_float/double/op_sum/op_max%s", libname, "");
    }
    int provided = 0;
    int rc = init(NULL, NULL, LP_THREAD_FUNNELED, &provided);
    if (rc != 0) return fail(err, errlen, "MPI_Init_thread failed in %s%s", libname, "");
    if (ver) {
        char buf[8192];
        int n = 0;
        if (ver(buf, &n) == 0) {
            buf[sizeof buf - 1] = 0;
            char *nl = strpbrk(buf, "\n,");
            if (nl) *nl = 0;
            snprintf(version, sizeof version, "%s", buf);
        }
    }
    if (ompi) {
        ((o_rank_fn)f_rank)(o_comm, &rank_);
        ((o_rank_fn)f_size)(o_comm, &size_);
    } else {
        ((m_rank_fn)f_rank)(MPICH_COMM_WORLD, &rank_);
        ((m_rank_fn)f_size)(MPICH_COMM_WORLD, &size_);
    }
    return 0;
}

int lp_mpi_rank(void) { return rank_; }
int lp_mpi_size(void) { return size_; }
const char *lp_mpi_library(void) { return libname; }
const char *lp_mpi_version(void) { return version; }

int lp_mpi_allreduce(const void *in, void *out, int count, int dtype, int op) {
    if (!lib) return -1;
    if (ompi)
        return ((o_allreduce_fn)f_allreduce)(in, out, count, dtype == LP_MPI_DOUBLE ? o_double : o_float,
                                             op == LP_MPI_MAX ? o_max : o_sum, o_comm);
    return ((m_allreduce_fn)f_allreduce)(in, out, count, dtype == LP_MPI_DOUBLE ? MPICH_DOUBLE : MPICH_FLOAT,
                                         op == LP_MPI_MAX ? MPICH_MAX : MPICH_SUM, MPICH_COMM_WORLD);
}

int lp_mpi_barrier(void) {
    if (!lib) return -1;
    return ompi ? ((o_barrier_fn)f_barrier)(o_comm) : ((m_barrier_fn)f_barrier)(MPICH_COMM_WORLD);
}

void lp_mpi_abort(int code) {
    if (!lib) return;
    if (ompi) ((o_abort_fn)f_abort)(o_comm, code);
    else ((m_abort_fn)f_abort)(MPICH_COMM_WORLD, code);
}

int lp_mpi_finalize(void) {
    if (!lib) return 0;
    int rc = f_finalize();
    return rc;
}
