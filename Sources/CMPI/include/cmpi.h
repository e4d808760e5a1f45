// CMPI: MPI loaded at run time. lora-train links no MPI library and includes no mpi.h: when it is launched by
// mpirun or srun it dlopens the system's libmpi (Open MPI's libmpi.so.40, or an MPICH-ABI libmpi.so.12) and
// resolves the handful of calls it makes, with the handles of that implementation (Open MPI exports them as
// symbols, the MPICH ABI fixes them as integer constants). A single process never calls anything here.
#ifndef CMPI_H
#define CMPI_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { LP_MPI_FLOAT = 0, LP_MPI_DOUBLE = 1 };
enum { LP_MPI_SUM = 0, LP_MPI_MAX = 1 };

/// Loads libmpi (`path`, or the usual sonames when NULL) and calls MPI_Init_thread(FUNNELED). Returns 0, or -1
/// with a one-line reason in `err` (what was tried).
int lp_mpi_init(const char *path, char *err, size_t errlen);
int lp_mpi_rank(void);
int lp_mpi_size(void);
/// The library file that was loaded and its MPI_Get_library_version line (first line).
const char *lp_mpi_library(void);
const char *lp_mpi_version(void);
/// out[i] = op over ranks of in[i], on every rank; returns MPI's error code (0: success).
int lp_mpi_allreduce(const void *in, void *out, int count, int dtype, int op);
int lp_mpi_barrier(void);
void lp_mpi_abort(int code);
int lp_mpi_finalize(void);

#ifdef __cplusplus
}
#endif
#endif
