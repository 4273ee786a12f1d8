/*
 * The embedded store's leaf reads in one call (fedchain/storage/_native.py loads this with ctypes).
 *
 * A verified read of a blob copies each leaf block of its DAG into its place in one buffer
 * (fedchain/storage/_unixfs.py). Made from Python that is an open, a stat, a readv and a close
 * per 256 KiB leaf, each a Python call holding the GIL between them: on a 2-core machine that
 * kept beside hashing and arithmetic, the interpreter's share of an audit's reads cost about as
 * much as the kernel's copying. fc_read_leaves makes the same system calls for a run of leaves
 * in one call, which ctypes makes without the GIL.
 *
 * It decides nothing the Python reader would not: a leaf counts as read only if its file is
 * exactly its envelope plus the size its parent gives it and the envelope is the expected one
 * (the bytes the Python caller computed); at the first leaf that is not so (missing, another size,
 * another envelope, an I/O error) it stops and says how many it read, and the caller reads that
 * leaf the general way, which names what is wrong with it. What was read is hashed by the caller.
 */
#include <stdint.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

#define ENVELOPE_MAX 64 /* a leaf's dag-pb envelope is a few bytes; a longer one is left to the caller */

/* 1 where fc_read_leaves reads files (a POSIX system); 0 where it reads none. */
int64_t fc_read_leaves_available(void) { return 1; }

static int64_t read_one(const char *path, const unsigned char *head, int64_t head_len, const unsigned char *tail,
                        int64_t tail_len, unsigned char *target, int64_t size) {
    unsigned char got_head[ENVELOPE_MAX], got_tail[ENVELOPE_MAX];
    if (head_len < 0 || tail_len < 0 || size < 0 || head_len > ENVELOPE_MAX || tail_len > ENVELOPE_MAX) return 0;
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || (int64_t)st.st_size != head_len + size + tail_len) {
        close(fd);
        return 0;
    }
    struct iovec iov[3] = {{got_head, (size_t)head_len}, {target, (size_t)size}, {got_tail, (size_t)tail_len}};
    int at = 0;
    while (at < 3 && iov[at].iov_len == 0) at++;
    while (at < 3) {
        ssize_t n = readv(fd, iov + at, 3 - at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { /* an error, or the file shrank meanwhile */
            close(fd);
            return 0;
        }
        size_t left = (size_t)n;
        while (at < 3 && left >= iov[at].iov_len) {
            left -= iov[at].iov_len;
            at++;
        }
        if (at < 3) {
            iov[at].iov_base = (unsigned char *)iov[at].iov_base + left;
            iov[at].iov_len -= left;
        }
    }
    close(fd);
    return memcmp(got_head, head, (size_t)head_len) == 0 && memcmp(got_tail, tail, (size_t)tail_len) == 0;
}

/*
 * For i = 0 .. count-1: the file paths[i] must hold exactly heads[i] (head_lens[i] bytes), then
 * sizes[i] bytes, then tails[i] (tail_lens[i] bytes); those sizes[i] bytes are read to out, one
 * leaf after the other (leaf i at out + sizes[0] + ... + sizes[i-1]). Returns how many leading
 * leaves were so read; out past them holds whatever it held, or part of the next leaf.
 */
int64_t fc_read_leaves(const char *const *paths, const unsigned char *const *heads, const int64_t *head_lens,
                       const unsigned char *const *tails, const int64_t *tail_lens, const int64_t *sizes,
                       int64_t count, unsigned char *out) {
    int64_t pos = 0;
    for (int64_t i = 0; i < count; i++) {
        if (!read_one(paths[i], heads[i], head_lens[i], tails[i], tail_lens[i], out + pos, sizes[i])) return i;
        pos += sizes[i];
    }
    return count;
}

#else /* no POSIX files here: the Python reader reads every leaf */

int64_t fc_read_leaves_available(void) { return 0; }

int64_t fc_read_leaves(const char *const *paths, const unsigned char *const *heads, const int64_t *head_lens,
                       const unsigned char *const *tails, const int64_t *tail_lens, const int64_t *sizes,
                       int64_t count, unsigned char *out) {
    (void)paths, (void)heads, (void)head_lens, (void)tails, (void)tail_lens, (void)sizes, (void)count, (void)out;
    return 0;
}

#endif
