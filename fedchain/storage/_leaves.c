/*
 * The embedded store's leaf reads in one call (fedchain/storage/_native.py loads this with ctypes).
 *
 * A verified read of a blob copies each leaf block of its DAG into its place in one buffer
 * (fedchain/storage/_unixfs.py). Made from Python that is an open, a stat, a readv and a close
 * per 256 KiB leaf, each a Python call holding the GIL between them: on a 2-core machine that
 * kept beside hashing and arithmetic, the interpreter's share of an audit's reads cost about as
 * much as the kernel's copying. fc_read_leaves makes the same system calls for a run of leaves
 * in one call, which ctypes makes without the GIL, and names the block files itself
 * (fc_leaf_path: the store's names, tested against fedchain/storage/_local.py's).
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

#define MULTIHASH_MAX 128 /* longer than any multihash the store holds (sha2-256: 34 bytes) */
#define PATH_MAX_LEN 4096

/*
 * The path of a block's file, as fedchain/storage/_local.py names it: <blocks>/<XY>/<KEY>.data,
 * KEY the unpadded RFC 4648 base32 (upper case) of the multihash, XY its next-to-last two
 * characters (kubo's flatfs sharding). Returns the path's length, or -1 if it does not fit `cap`
 * bytes with its terminating zero (or the multihash is empty or too long).
 */
int64_t fc_leaf_path(const char *blocks, const unsigned char *multihash, int64_t length, char *out, int64_t cap) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    char key[(MULTIHASH_MAX * 8 + 4) / 5 + 1];
    if (length < 1 || length > MULTIHASH_MAX) return -1;
    int64_t n = 0;
    uint32_t buffer = 0;
    int bits = 0;
    for (int64_t i = 0; i < length; i++) {
        buffer = (buffer << 8) | multihash[i];
        bits += 8;
        while (bits >= 5) {
            key[n++] = alphabet[(buffer >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0) key[n++] = alphabet[(buffer << (5 - bits)) & 31];
    if (n < 3) return -1;
    size_t dir = strlen(blocks);
    int64_t total = (int64_t)dir + 1 + 2 + 1 + n + 5;
    if (total + 1 > cap) return -1;
    char *p = out;
    memcpy(p, blocks, dir);
    p += dir;
    *p++ = '/';
    *p++ = key[n - 3];
    *p++ = key[n - 2];
    *p++ = '/';
    memcpy(p, key, (size_t)n);
    p += n;
    memcpy(p, ".data", 6); /* with its terminating zero */
    return total;
}

/*
 * For i = 0 .. count-1: the file of the block with multihash multihashes[i] (lengths[i] bytes)
 * under `blocks` (fc_leaf_path) must hold exactly heads[i] (head_lens[i] bytes), then sizes[i]
 * bytes, then tails[i] (tail_lens[i] bytes); those sizes[i] bytes are read to out, one leaf
 * after the other (leaf i at out + sizes[0] + ... + sizes[i-1]). Returns how many leading leaves
 * were so read; out past them holds whatever it held, or part of the next leaf.
 */
int64_t fc_read_leaves(const char *blocks, const unsigned char *const *multihashes, const int64_t *lengths,
                       const unsigned char *const *heads, const int64_t *head_lens, const unsigned char *const *tails,
                       const int64_t *tail_lens, const int64_t *sizes, int64_t count, unsigned char *out) {
    char path[PATH_MAX_LEN];
    int64_t pos = 0;
    for (int64_t i = 0; i < count; i++) {
        if (fc_leaf_path(blocks, multihashes[i], lengths[i], path, sizeof path) < 0) return i;
        if (!read_one(path, heads[i], head_lens[i], tails[i], tail_lens[i], out + pos, sizes[i])) return i;
        pos += sizes[i];
    }
    return count;
}

#else /* no POSIX files here: the Python reader reads every leaf */

int64_t fc_read_leaves_available(void) { return 0; }

int64_t fc_leaf_path(const char *blocks, const unsigned char *multihash, int64_t length, char *out, int64_t cap) {
    (void)blocks, (void)multihash, (void)length, (void)out, (void)cap;
    return -1;
}

int64_t fc_read_leaves(const char *blocks, const unsigned char *const *multihashes, const int64_t *lengths,
                       const unsigned char *const *heads, const int64_t *head_lens, const unsigned char *const *tails,
                       const int64_t *tail_lens, const int64_t *sizes, int64_t count, unsigned char *out) {
    (void)blocks, (void)multihashes, (void)lengths, (void)heads, (void)head_lens, (void)tails, (void)tail_lens;
    (void)sizes, (void)count, (void)out;
    return 0;
}

#endif
