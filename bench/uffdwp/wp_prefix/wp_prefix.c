// wp_prefix: is memory read right after UFFDIO_WRITEPROTECT a prefix of
// another process's stores?  (daxsnap, docs/dax.md "open issues")
//
// A writer process maps a tmpfs file MAP_SHARED, registers the mapping with
// its own userfaultfd in write-protect mode and hands the descriptor to the
// parent (SCM_RIGHTS).  It then stores seq+1 into slot seq % SLOTS, seq =
// 0, 1, ..., where slots are STRIDE bytes apart (8: consecutive words across
// pages; 4096: one word per page, like clienttest "stream").  The parent,
// again and again: sleeps a random while, write-protects the whole range
// with one UFFDIO_WRITEPROTECT, copies the memory through its own second
// (unregistered) mapping of the file, checks the copy is a prefix of the
// writer's stores, then unprotects (and wakes) the whole range.
//
// With -b the writer stores each word as 8 single-byte stores, low byte
// first: what the Go compiler emits for binary.LittleEndian.PutUint64 under
// -race (instrumentation stops the byte stores being combined).
//
// usage: wp_prefix [-n CUTS] [-s STRIDE] [-p PAGES] [-b]
// exit 0 if every image is a prefix, 1 if any is not, 2 on setup errors.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define die(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, ": %s\n", strerror(errno)); exit(2); } while (0)

static size_t len, stride = 8, nslots;
static int bytes;

static void send_fd(int sock, int fd) {
	char c = 0, buf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&c, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET, h->cmsg_type = SCM_RIGHTS, h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof fd);
	if (sendmsg(sock, &m, 0) != 1) die("sendmsg");
}

static int recv_fd(int sock) {
	char c, buf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&c, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	if (recvmsg(sock, &m, 0) != 1) die("recvmsg");
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
	return fd;
}

static void writer(int file, int sock) {
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, file, 0);
	if (mem == MAP_FAILED) die("writer mmap");
	int u = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (u < 0) die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
	if (ioctl(u, UFFDIO_API, &api)) die("UFFDIO_API");
	struct uffdio_register reg = {.range = {(uintptr_t)mem, len}, .mode = UFFDIO_REGISTER_MODE_WP};
	if (ioctl(u, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
	uint64_t addr = (uintptr_t)mem;
	if (write(sock, &addr, sizeof addr) != sizeof addr) die("write addr");
	send_fd(sock, u);
	close(u);
	for (uint64_t seq = 0;; seq++) {
		volatile char *p = mem + (seq % nslots) * stride;
		uint64_t v = seq + 1;
		if (bytes) {
			for (int i = 0; i < 8; i++)
				p[i] = (char)(v >> (8 * i));
		} else {
			*(volatile uint64_t *)p = v;
		}
	}
}

static uint64_t word(const char *img, size_t slot) {
	uint64_t v;
	memcpy(&v, img + slot * stride, 8);
	return v;
}

// prefix returns -1 if img is a prefix of the writer's stores, else the
// first slot that is not (and fills *got, *want, *cut).
static long prefix(const char *img, uint64_t *got, uint64_t *want, uint64_t *cut) {
	uint64_t j = 0;
	for (size_t s = 0; s < nslots; s++)
		if (word(img, s) > j) j = word(img, s);
	if (j == 0) return -1;
	j--;
	for (size_t s = 0; s < nslots; s++) {
		uint64_t w = j >= s ? j - (j - s) % nslots + 1 : 0;
		if (word(img, s) != w) {
			*got = word(img, s), *want = w, *cut = j;
			return s;
		}
	}
	return -1;
}

int main(int argc, char **argv) {
	long cuts = 10000, pages = 64;
	int o;
	while ((o = getopt(argc, argv, "n:s:p:b")) != -1) {
		switch (o) {
		case 'n': cuts = atol(optarg); break;
		case 's': stride = atol(optarg); break;
		case 'p': pages = atol(optarg); break;
		case 'b': bytes = 1; break;
		default: fprintf(stderr, "usage: %s [-n CUTS] [-s STRIDE] [-p PAGES] [-b]\n", argv[0]); return 2;
		}
	}
	len = pages * 4096, nslots = len / stride;
	char path[] = "/dev/shm/wp_prefix.XXXXXX";
	int file = mkstemp(path);
	if (file < 0) die("mkstemp");
	unlink(path);
	if (ftruncate(file, len)) die("ftruncate");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) die("socketpair");
	pid_t pid = fork();
	if (pid < 0) die("fork");
	if (pid == 0) {
		close(sv[0]);
		writer(file, sv[1]);
	}
	close(sv[1]);
	uint64_t addr;
	if (read(sv[0], &addr, sizeof addr) != sizeof addr) die("read addr");
	int u = recv_fd(sv[0]);
	char *mine = mmap(NULL, len, PROT_READ, MAP_SHARED, file, 0);
	char *img = malloc(len);
	if (mine == MAP_FAILED || !img) die("parent mmap");
	srand(getpid());
	long bad = 0, empty = 0;
	for (long k = 0; k < cuts; k++) {
		struct timespec d = {0, 20000 + rand() % 200000};
		nanosleep(&d, NULL);
		struct uffdio_writeprotect wp = {.range = {addr, len}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
		if (ioctl(u, UFFDIO_WRITEPROTECT, &wp)) die("protect");
		memcpy(img, mine, len);
		uint64_t got, want, cut;
		long s = prefix(img, &got, &want, &cut);
		if (s >= 0) {
			if (bad++ < 5)
				fprintf(stderr, "cut %ld: slot %ld (page %ld) holds %#llx, want %#llx (cut at write %llu)\n", k, s,
				        s * (long)stride / 4096, (unsigned long long)got, (unsigned long long)want, (unsigned long long)cut);
		} else if (word(img, 0) == 0) {
			empty++;
		}
		// Drain the fault messages, then lift the protection and wake.
		struct uffd_msg msg[16];
		while (read(u, msg, sizeof msg) > 0)
			;
		wp.mode = 0;
		while (ioctl(u, UFFDIO_WRITEPROTECT, &wp))
			if (errno != EAGAIN) die("unprotect");
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	printf("cuts %ld bad %ld empty %ld stride %zu pages %ld %s\n", cuts, bad, empty, stride, pages, bytes ? "byte-stores" : "word-stores");
	return bad ? 1 : 0;
}
