/* POSIX semantics matrix for tests/posix_matrix.rs.
 *
 * Run as root (inside the sandbox) with a directory: builds every case in a
 * fresh subdirectory of it, switches to the uids/gids of the case with
 * setresuid/setresgid (keeping saved id 0 to come back) and prints one line
 * per case: operation, file type, who, and the errno or result. Nothing
 * printed depends on where the directory is, so the output of two runs on
 * two filesystems can be compared line by line. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int base;    /* fd of the directory under test */
static int ncase;

static void die(const char *what)
{
    fprintf(stderr, "matrix: %s: %s\n", what, strerror(errno));
    exit(2);
}

static const char *en(int e)
{
    if (e == 0)
        return "ok";
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

static void as(uid_t u, gid_t g, int n, const gid_t *gs)
{
    if (setgroups(n, gs) < 0) die("setgroups");
    if (setresgid(g, g, 0) < 0) die("setresgid");
    if (setresuid(u, u, 0) < 0) die("setresuid");
}

static void back(void)
{
    if (setresuid(0, 0, 0) < 0) die("setresuid back");
    if (setresgid(0, 0, 0) < 0) die("setresgid back");
    if (setgroups(0, NULL) < 0) die("setgroups back");
}

static void as1(uid_t u) { as(u, u, 0, NULL); }

/* A fresh directory for a case (mode, owner), as an fd. */
static int fresh(mode_t mode, uid_t u, gid_t g)
{
    char name[32];
    snprintf(name, sizeof name, "c%d", ncase++);
    if (mkdirat(base, name, 0755) < 0) die("mkdir case");
    if (fchownat(base, name, u, g, 0) < 0) die("chown case");
    if (fchmodat(base, name, mode, 0) < 0) die("chmod case");
    int fd = openat(base, name, O_RDONLY | O_DIRECTORY);
    if (fd < 0) die("open case");
    return fd;
}

static void pause_a_bit(void)
{
    struct timespec t = {0, 15 * 1000 * 1000};
    nanosleep(&t, NULL);
}

static int res(int r) { return r < 0 ? errno : 0; }

static const char *types[] = {"reg", "dir", "fifo", "symlink", "sock"};

/* Make an entry of a type in dir (as the current ids). */
static int make(int dir, const char *name, const char *type)
{
    if (!strcmp(type, "reg")) {
        int fd = openat(dir, name, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0) return errno;
        close(fd);
        return 0;
    }
    if (!strcmp(type, "dir")) return res(mkdirat(dir, name, 0755));
    if (!strcmp(type, "fifo")) return res(mkfifoat(dir, name, 0644));
    if (!strcmp(type, "symlink")) return res(symlinkat("target", dir, name));
    if (!strcmp(type, "sock")) {
        int here = open(".", O_RDONLY | O_DIRECTORY);
        if (here < 0 || fchdir(dir) < 0) return errno;
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
        int e = res(bind(s, (struct sockaddr *)&a, sizeof a));
        close(s);
        if (fchdir(here) < 0) die("fchdir back");
        close(here);
        return e;
    }
    return EINVAL;
}

static int remove_entry(int dir, const char *name, const char *type)
{
    return res(unlinkat(dir, name, !strcmp(type, "dir") ? AT_REMOVEDIR : 0));
}

static struct stat st(int dir, const char *name)
{
    struct stat s;
    memset(&s, 0, sizeof s);
    if (fstatat(dir, name, &s, AT_SYMLINK_NOFOLLOW) < 0) s.st_mode = 0;
    return s;
}

static int newer(struct timespec a, struct timespec b)
{
    return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

/* ---- sticky directories ---- */
static void sticky(void)
{
    uid_t users[] = {1000, 2000, 3000};
    for (int t = 0; t < 5; t++)
        for (int d = 0; d < 2; d++)
            for (int e = 0; e < 2; e++)
                for (int a = 0; a < 3; a++) {
                    const char *ty = types[t];
                    uid_t du = users[d], eu = users[e], au = users[a];
                    /* unlink / rmdir */
                    int dir = fresh(01777, du, du);
                    as1(eu);
                    int m = make(dir, "e", ty);
                    back();
                    as1(au);
                    int r = remove_entry(dir, "e", ty);
                    back();
                    printf("sticky remove %s dir=%u entry=%u by=%u: %s%s\n", ty, du, eu, au,
                           en(r), m ? " (make failed)" : "");
                    close(dir);
                    /* rename within the directory */
                    dir = fresh(01777, du, du);
                    as1(eu);
                    m = make(dir, "e", ty);
                    back();
                    as1(au);
                    r = res(renameat(dir, "e", dir, "moved"));
                    back();
                    printf("sticky rename-from %s dir=%u entry=%u by=%u: %s\n", ty, du, eu, au,
                           en(r));
                    close(dir);
                    /* rename the actor's own entry over it */
                    dir = fresh(01777, du, du);
                    as1(eu);
                    make(dir, "e", ty);
                    back();
                    as1(au);
                    make(dir, "mine", ty);
                    r = res(renameat(dir, "mine", dir, "e"));
                    back();
                    printf("sticky rename-over %s dir=%u entry=%u by=%u: %s\n", ty, du, eu, au,
                           en(r));
                    close(dir);
                    /* move it out to a directory of the actor */
                    dir = fresh(01777, du, du);
                    int out = fresh(0755, au, au);
                    as1(eu);
                    make(dir, "e", ty);
                    back();
                    as1(au);
                    r = res(renameat(dir, "e", out, "e"));
                    back();
                    printf("sticky rename-out %s dir=%u entry=%u by=%u: %s\n", ty, du, eu, au,
                           en(r));
                    close(dir);
                    close(out);
                }
}

/* ---- open() permission checks ---- */
static void open_perms(void)
{
    static const mode_t modes[] = {0000, 0400, 0200, 0600, 0040, 0020, 0060, 0004,
                                   0002, 0006, 0444, 0222, 0707, 0070, 0777, 0640};
    static const int flags[] = {O_RDONLY, O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC,
                                O_WRONLY | O_CREAT, O_WRONLY | O_APPEND};
    static const char *fname[] = {"rdonly", "wronly", "rdwr", "rdonly|trunc", "wronly|creat",
                                  "append"};
    struct { uid_t u; gid_t g; int n; gid_t gs[2]; const char *who; } who[] = {
        {1000, 1000, 0, {0}, "owner"},
        {2000, 1000, 0, {0}, "group"},
        {2000, 2000, 1, {1000}, "supplementary"},
        {3000, 3000, 0, {0}, "other"},
    };
    int dir = fresh(0755, 0, 0);
    for (size_t mi = 0; mi < sizeof modes / sizeof *modes; mi++) {
        char name[32];
        snprintf(name, sizeof name, "f%04o", modes[mi]);
        int fd = openat(dir, name, O_CREAT | O_WRONLY, 0600);
        if (fd < 0) die("create");
        if (write(fd, "data", 4) != 4) die("write");
        close(fd);
        if (fchownat(dir, name, 1000, 1000, 0) < 0) die("chown");
        if (fchmodat(dir, name, modes[mi], 0) < 0) die("chmod");
        for (size_t w = 0; w < sizeof who / sizeof *who; w++)
            for (size_t f = 0; f < sizeof flags / sizeof *flags; f++) {
                as(who[w].u, who[w].g, who[w].n, who[w].gs);
                int o = openat(dir, name, flags[f] & ~O_TRUNC, 0644);
                int r = o < 0 ? errno : 0;
                if (o >= 0) close(o);
                back();
                if (flags[f] & O_TRUNC) {
                    /* O_TRUNC on a file it can read but not write: EACCES */
                    as(who[w].u, who[w].g, who[w].n, who[w].gs);
                    o = openat(dir, name, O_WRONLY | O_TRUNC);
                    r = o < 0 ? errno : 0;
                    if (o >= 0) close(o);
                    back();
                }
                printf("open %s mode=%04o by=%s: %s\n", fname[f], modes[mi], who[w].who, en(r));
            }
    }
    close(dir);
    /* directories: search, list, create in them */
    static const mode_t dmodes[] = {0700, 0500, 0300, 0100, 0070, 0050, 0030, 0010,
                                    0007, 0005, 0003, 0001, 0000, 0777, 01777};
    for (size_t mi = 0; mi < sizeof dmodes / sizeof *dmodes; mi++) {
        int top = fresh(0755, 0, 0);
        if (mkdirat(top, "d", 0755) < 0) die("mkdir d");
        int fd = openat(top, "d/f", O_CREAT | O_WRONLY, 0666);
        if (fd < 0) die("create d/f");
        close(fd);
        if (fchownat(top, "d", 1000, 1000, 0) < 0) die("chown d");
        if (fchmodat(top, "d", dmodes[mi], 0) < 0) die("chmod d");
        for (size_t w = 0; w < sizeof who / sizeof *who; w++) {
            as(who[w].u, who[w].g, who[w].n, who[w].gs);
            int o = openat(top, "d/f", O_RDONLY);
            int r1 = o < 0 ? errno : 0;
            if (o >= 0) close(o);
            o = openat(top, "d", O_RDONLY | O_DIRECTORY);
            int r2 = o < 0 ? errno : 0;
            if (o >= 0) close(o);
            o = openat(top, "d/new", O_CREAT | O_EXCL | O_WRONLY, 0644);
            int r3 = o < 0 ? errno : 0;
            if (o >= 0) { close(o); unlinkat(top, "d/new", 0); }
            int r4 = res(mkdirat(top, "d/sub", 0755));
            if (!r4) unlinkat(top, "d/sub", AT_REMOVEDIR);
            back();
            printf("dir mode=%04o by=%s: open-in %s, list %s, create %s, mkdir %s\n", dmodes[mi],
                   who[w].who, en(r1), en(r2), en(r3), en(r4));
        }
        close(top);
    }
}

/* ---- chown/chmod by non-root, set-id bits, ctime ---- */
static void show_attr(const char *what, int dir, const char *name, struct timespec before, int r)
{
    struct stat s = st(dir, name);
    printf("%s: %s mode=%04o owner=%u:%u ctime %s\n", what, en(r), s.st_mode & 07777, s.st_uid,
           s.st_gid, newer(s.st_ctim, before) ? "changed" : "same");
}

static void chown_chmod(void)
{
    const char *kinds[] = {"reg", "dir"};
    for (int k = 0; k < 2; k++) {
        const char *ty = kinds[k];
        struct {
            const char *what;
            uid_t actor; int ngroups; gid_t groups[2];
            int op; /* 0 chown, 1 chmod */
            uid_t u; gid_t g; mode_t mode;
        } cases[] = {
            {"owner chown uid to other", 1000, 0, {0}, 0, 2000, -1, 0},
            {"owner chown uid to self", 1000, 0, {0}, 0, 1000, -1, 0},
            {"owner chown gid to own group", 1000, 1, {1500}, 0, -1, 1500, 0},
            {"owner chown gid to foreign group", 1000, 0, {0}, 0, -1, 2000, 0},
            {"owner chown -1 -1", 1000, 0, {0}, 0, -1, -1, 0},
            {"other chown gid", 2000, 1, {1000}, 0, -1, 1000, 0},
            {"other chown uid to self", 2000, 0, {0}, 0, 2000, -1, 0},
            {"owner chmod 0640", 1000, 0, {0}, 1, 0, 0, 0640},
            {"other chmod 0777", 2000, 1, {1000}, 1, 0, 0, 0777},
            {"owner chmod setuid", 1000, 0, {0}, 1, 0, 0, 04755},
            {"owner chmod setgid own group", 1000, 0, {0}, 1, 0, 0, 02755},
            {"owner chmod sticky", 1000, 0, {0}, 1, 0, 0, 01755},
            {"root chown", 0, 0, {0}, 0, 3000, 3000, 0},
            {"root chmod 07777", 0, 0, {0}, 1, 0, 0, 07777},
        };
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            int dir = fresh(0755, 0, 0);
            if (make(dir, "x", ty)) die("make x");
            if (fchownat(dir, "x", 1000, 1000, 0) < 0) die("chown x");
            if (fchmodat(dir, "x", 06755, 0) < 0) die("chmod x");
            struct timespec before = st(dir, "x").st_ctim;
            pause_a_bit();
            if (cases[c].actor)
                as(cases[c].actor, cases[c].actor, cases[c].ngroups, cases[c].groups);
            int r = cases[c].op == 0
                        ? res(fchownat(dir, "x", cases[c].u, cases[c].g, 0))
                        : res(fchmodat(dir, "x", cases[c].mode, 0));
            if (cases[c].actor) back();
            char what[128];
            snprintf(what, sizeof what, "%s %s", cases[c].what, ty);
            show_attr(what, dir, "x", before, r);
            close(dir);
        }
        /* setgid on a file whose group the owner is not in: the bit goes */
        int dir = fresh(0755, 0, 0);
        make(dir, "x", ty);
        fchownat(dir, "x", 1000, 2000, 0);
        as1(1000);
        int r = res(fchmodat(dir, "x", 02775, 0));
        back();
        char what[128];
        snprintf(what, sizeof what, "owner chmod setgid foreign group %s", ty);
        show_attr(what, dir, "x", (struct timespec){0, 0}, r);
        close(dir);
    }
    /* writes clear set-id bits of regular files */
    /* "member": in the file's group by a supplementary group only */
    static const gid_t member_groups[] = {1000};
    struct { const char *who; uid_t u; mode_t mode; int ngroups; } wr[] = {
        {"owner", 1000, 06777, 0}, {"other", 2000, 06777, 0}, {"owner", 1000, 06757, 0},
        {"other", 2000, 02767, 0}, {"root", 0, 06777, 0}, {"member", 2000, 02767, 1},
        {"member", 2000, 06777, 1},
    };
    for (size_t i = 0; i < sizeof wr / sizeof *wr; i++) {
        int dir = fresh(0755, 0, 0);
        make(dir, "x", "reg");
        fchownat(dir, "x", 1000, 1000, 0);
        fchmodat(dir, "x", wr[i].mode, 0);
        struct timespec before = st(dir, "x").st_ctim;
        pause_a_bit();
        if (wr[i].u) as(wr[i].u, wr[i].u, wr[i].ngroups, member_groups);
        int fd = openat(dir, "x", O_WRONLY);
        int r = fd < 0 ? errno : res(write(fd, "abc", 3));
        if (fd >= 0) close(fd);
        if (wr[i].u) back();
        char what[128];
        snprintf(what, sizeof what, "write by %s to %04o", wr[i].who, wr[i].mode);
        show_attr(what, dir, "x", before, r);
        /* truncate too */
        fchmodat(dir, "x", wr[i].mode, 0);
        before = st(dir, "x").st_ctim;
        pause_a_bit();
        if (wr[i].u) as(wr[i].u, wr[i].u, wr[i].ngroups, member_groups);
        fd = openat(dir, "x", O_WRONLY);
        r = fd < 0 ? errno : res(ftruncate(fd, 1));
        if (fd >= 0) close(fd);
        if (wr[i].u) back();
        snprintf(what, sizeof what, "ftruncate by %s of %04o", wr[i].who, wr[i].mode);
        show_attr(what, dir, "x", before, r);
        close(dir);
    }
    /* utimes by non-owner: EPERM with explicit times, ok with NULL when writable */
    int dir = fresh(0755, 0, 0);
    make(dir, "x", "reg");
    fchownat(dir, "x", 1000, 1000, 0);
    fchmodat(dir, "x", 0666, 0);
    struct timespec t[2] = {{1, 0}, {1, 0}};
    as1(2000);
    int r1 = res(utimensat(dir, "x", t, 0));
    int r2 = res(utimensat(dir, "x", NULL, 0));
    back();
    as1(1000);
    int r3 = res(utimensat(dir, "x", t, 0));
    back();
    printf("utimes other explicit %s, other now %s, owner explicit %s\n", en(r1), en(r2), en(r3));
    close(dir);
}

/* ---- owners of symlinks, fifos and sockets follow them ---- */
static void special_owners(void)
{
    for (int t = 2; t < 5; t++) {
        const char *ty = types[t];
        int dir = fresh(0777, 0, 0), other = fresh(0777, 0, 0);
        make(dir, "a", ty);
        struct timespec c0 = st(dir, "a").st_ctim;
        pause_a_bit();
        int r = res(fchownat(dir, "a", 1000, 1500, AT_SYMLINK_NOFOLLOW));
        struct stat s = st(dir, "a");
        printf("lchown %s: %s owner=%u:%u ctime %s\n", ty, en(r), s.st_uid, s.st_gid,
               newer(s.st_ctim, c0) ? "changed" : "same");
        r = res(renameat(dir, "a", other, "b"));
        s = st(other, "b");
        printf("owner after rename %s: %s owner=%u:%u\n", ty, en(r), s.st_uid, s.st_gid);
        r = res(linkat(other, "b", dir, "c", 0));
        s = st(dir, "c");
        printf("owner of link %s: %s owner=%u:%u\n", ty, en(r), s.st_uid, s.st_gid);
        as1(2000);
        make(dir, "d", ty);
        back();
        r = res(renameat(dir, "d", other, "b"));
        s = st(other, "b");
        printf("owner after rename over %s: %s owner=%u:%u\n", ty, en(r), s.st_uid, s.st_gid);
        r = res(unlinkat(other, "b", 0));
        make(other, "b", ty);
        s = st(other, "b");
        printf("owner of new entry %s by root: %s owner=%u:%u\n", ty, en(r), s.st_uid, s.st_gid);
        s = st(dir, "c");
        printf("owner of other name %s: owner=%u:%u nlink=%lu\n", ty, s.st_uid, s.st_gid,
               (unsigned long)s.st_nlink);
        /* the owner may now do what owners do */
        if (fchmod(dir, 01777) < 0) die("chmod sticky");
        as1(1000);
        r = res(renameat(dir, "c", dir, "e"));
        back();
        printf("owner renames %s in sticky dir: %s\n", ty, en(r));
        as1(3000);
        r = res(unlinkat(dir, "e", 0));
        back();
        printf("other removes %s in sticky dir: %s\n", ty, en(r));
        close(dir);
        close(other);
    }
}

/* ---- link counts and ctime ---- */
static void links(void)
{
    for (int t = 0; t < 5; t++) {
        const char *ty = types[t];
        if (!strcmp(ty, "dir")) continue;
        for (int who = 0; who < 2; who++) {
            uid_t u = who ? 1000 : 0;
            int dir = fresh(0777, 0, 0);
            if (u) as1(u);
            make(dir, "a", ty);
            struct timespec c0 = st(dir, "a").st_ctim, d0 = st(dir, ".").st_mtim;
            pause_a_bit();
            int r = res(linkat(dir, "a", dir, "b", 0));
            struct stat a = st(dir, "a"), b = st(dir, "b"), d = st(dir, ".");
            printf("link %s by=%u: %s nlink=%lu,%lu ctime %s dir-mtime %s same-ino %d\n", ty, u,
                   en(r), (unsigned long)a.st_nlink, (unsigned long)b.st_nlink,
                   newer(a.st_ctim, c0) ? "changed" : "same",
                   newer(d.st_mtim, d0) ? "changed" : "same", a.st_ino == b.st_ino);
            c0 = a.st_ctim;
            d0 = d.st_mtim;
            pause_a_bit();
            r = res(unlinkat(dir, "a", 0));
            b = st(dir, "b");
            d = st(dir, ".");
            printf("unlink %s by=%u: %s nlink=%lu ctime %s dir-mtime %s\n", ty, u, en(r),
                   (unsigned long)b.st_nlink, newer(b.st_ctim, c0) ? "changed" : "same",
                   newer(d.st_mtim, d0) ? "changed" : "same");
            /* rename updates ctime of the renamed entry */
            c0 = b.st_ctim;
            pause_a_bit();
            r = res(renameat(dir, "b", dir, "c"));
            struct stat c = st(dir, "c");
            printf("rename %s by=%u: %s nlink=%lu ctime %s\n", ty, u, en(r),
                   (unsigned long)c.st_nlink, newer(c.st_ctim, c0) ? "changed" : "same");
            /* open fd keeps the file after its last name goes */
            if (!strcmp(ty, "reg")) {
                int fd = openat(dir, "c", O_RDWR);
                r = res(unlinkat(dir, "c", 0));
                struct stat fs;
                fstat(fd, &fs);
                int w = res(write(fd, "zz", 2));
                printf("unlink open reg by=%u: %s nlink=%lu write %s\n", u, en(r),
                       (unsigned long)fs.st_nlink, en(w));
                close(fd);
            }
            if (u) back();
            close(dir);
        }
    }
    /* directories */
    int dir = fresh(0755, 0, 0);
    struct stat d = st(dir, ".");
    unsigned long n0 = d.st_nlink;
    mkdirat(dir, "s1", 0755);
    mkdirat(dir, "s2", 0755);
    unsigned long n1 = st(dir, ".").st_nlink, ns = st(dir, "s1").st_nlink;
    renameat(dir, "s2", dir, "s1/s2");
    unsigned long n2 = st(dir, ".").st_nlink, ns2 = st(dir, "s1").st_nlink;
    unlinkat(dir, "s1/s2", AT_REMOVEDIR);
    unsigned long ns3 = st(dir, "s1").st_nlink;
    unlinkat(dir, "s1", AT_REMOVEDIR);
    unsigned long n3 = st(dir, ".").st_nlink;
    printf("dir nlink: +%lu after 2 mkdir, sub %lu, +%lu after move in, sub %lu, sub %lu after rmdir, +%lu after rmdir\n",
           n1 - n0, ns, n2 - n0, ns2, ns3, n3 - n0);
    /* hard links by a non-owner: allowed (protected_hardlinks aside) */
    close(dir);
}

/* ---- errno of each operation on each kind of target; parent times ---- */
static const char *kinds[] = {"none", "reg", "dir", "fulldir", "fifo", "sock", "symlink",
                              "dangling", "loop"};

static void make_kind(int dir, const char *name, const char *k)
{
    if (!strcmp(k, "none")) return;
    if (!strcmp(k, "fulldir")) {
        make(dir, name, "dir");
        char p[64];
        snprintf(p, sizeof p, "%s/in", name);
        close(openat(dir, p, O_CREAT | O_WRONLY, 0644));
        return;
    }
    if (!strcmp(k, "symlink")) {
        close(openat(dir, "target", O_CREAT | O_WRONLY, 0644));
        symlinkat("target", dir, name);
        return;
    }
    if (!strcmp(k, "dangling")) {
        symlinkat("nowhere", dir, name);
        return;
    }
    if (!strcmp(k, "loop")) {
        symlinkat(name, dir, name);
        return;
    }
    make(dir, name, k);
}

static void errnos(void)
{
    const size_t nk = sizeof kinds / sizeof *kinds;
    for (size_t i = 0; i < nk; i++) {
        const char *k = kinds[i];
        struct { const char *op; } ops[] = {
            {"mkdir"}, {"rmdir"}, {"unlink"}, {"creat-excl"}, {"open-dir"}, {"open-nofollow"},
            {"open-rdonly"}, {"open-creat"}, {"truncate"}, {"link-from"}, {"link-to"},
            {"symlink-to"}, {"mkfifo"}, {"chmod"}, {"lchown"}, {"chown-follow"}, {"lookup-below"},
            {"rename-reg-over"}, {"rename-dir-over"}, {"rename-from"}, {"rename-noreplace"},
            {"rename-exchange"}, {"utimes"}, {"readlink"}, {"stat"},
        };
        for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
            const char *op = ops[o].op;
            int dir = fresh(0755, 0, 0);
            make_kind(dir, "t", k);
            make(dir, "f", "reg");
            make(dir, "d", "dir");
            struct stat d0 = st(dir, ".");
            pause_a_bit();
            int r = 0, fd;
            if (!strcmp(op, "mkdir")) r = res(mkdirat(dir, "t", 0755));
            else if (!strcmp(op, "rmdir")) r = res(unlinkat(dir, "t", AT_REMOVEDIR));
            else if (!strcmp(op, "unlink")) r = res(unlinkat(dir, "t", 0));
            else if (!strcmp(op, "creat-excl")) {
                fd = openat(dir, "t", O_CREAT | O_EXCL | O_WRONLY, 0644);
                r = fd < 0 ? errno : 0;
                if (fd >= 0) close(fd);
            } else if (!strcmp(op, "open-dir")) {
                fd = openat(dir, "t", O_RDONLY | O_DIRECTORY);
                r = fd < 0 ? errno : 0;
                if (fd >= 0) close(fd);
            } else if (!strcmp(op, "open-nofollow")) {
                fd = openat(dir, "t", O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
                r = fd < 0 ? errno : 0;
                if (fd >= 0) close(fd);
            } else if (!strcmp(op, "open-rdonly")) {
                fd = openat(dir, "t", O_RDONLY | O_NONBLOCK);
                r = fd < 0 ? errno : 0;
                if (fd >= 0) close(fd);
            } else if (!strcmp(op, "open-creat")) {
                fd = openat(dir, "t", O_CREAT | O_WRONLY | O_NONBLOCK, 0644);
                r = fd < 0 ? errno : 0;
                if (fd >= 0) close(fd);
            } else if (!strcmp(op, "truncate")) {
                int here = open(".", O_RDONLY | O_DIRECTORY);
                if (fchdir(dir) < 0) die("fchdir");
                r = res(truncate("t", 0));
                if (fchdir(here) < 0) die("fchdir back");
                close(here);
            } else if (!strcmp(op, "link-from")) r = res(linkat(dir, "t", dir, "n", 0));
            else if (!strcmp(op, "link-to")) r = res(linkat(dir, "f", dir, "t", 0));
            else if (!strcmp(op, "symlink-to")) r = res(symlinkat("x", dir, "t"));
            else if (!strcmp(op, "mkfifo")) r = res(mkfifoat(dir, "t", 0644));
            else if (!strcmp(op, "chmod")) r = res(fchmodat(dir, "t", 0700, 0));
            else if (!strcmp(op, "lchown")) r = res(fchownat(dir, "t", 5, 6, AT_SYMLINK_NOFOLLOW));
            else if (!strcmp(op, "chown-follow")) r = res(fchownat(dir, "t", 5, 6, 0));
            else if (!strcmp(op, "lookup-below")) {
                struct stat x;
                r = res(fstatat(dir, "t/x", &x, AT_SYMLINK_NOFOLLOW));
            } else if (!strcmp(op, "rename-reg-over")) r = res(renameat(dir, "f", dir, "t"));
            else if (!strcmp(op, "rename-dir-over")) r = res(renameat(dir, "d", dir, "t"));
            else if (!strcmp(op, "rename-from")) r = res(renameat(dir, "t", dir, "d/t"));
            else if (!strcmp(op, "rename-noreplace"))
                r = res(renameat2(dir, "f", dir, "t", RENAME_NOREPLACE));
            else if (!strcmp(op, "rename-exchange"))
                r = res(renameat2(dir, "d", dir, "t", RENAME_EXCHANGE));
            else if (!strcmp(op, "utimes")) {
                struct timespec t[2] = {{5, 0}, {7, 0}};
                r = res(utimensat(dir, "t", t, AT_SYMLINK_NOFOLLOW));
            } else if (!strcmp(op, "readlink")) {
                char b[64];
                r = readlinkat(dir, "t", b, sizeof b) < 0 ? errno : 0;
            } else if (!strcmp(op, "stat")) {
                struct stat x;
                r = res(fstatat(dir, "t", &x, 0));
            }
            struct stat d1 = st(dir, "."), t1 = st(dir, "t"), dd = st(dir, "d");
            printf("errno %s on %s: %s dir-mtime %s dir-nlink %lu t=%o/%lu/%u:%u/%lld/%lld d-nlink %lu\n",
                   op, k, en(r), newer(d1.st_mtim, d0.st_mtim) ? "changed" : "same",
                   (unsigned long)d1.st_nlink, t1.st_mode, (unsigned long)t1.st_nlink, t1.st_uid,
                   t1.st_gid, (long long)(t1.st_mode && !S_ISDIR(t1.st_mode) ? t1.st_size : 0),
                   (long long)(S_ISLNK(t1.st_mode) ? 0 : t1.st_mtim.tv_sec % 1000 == 7),
                   (unsigned long)dd.st_nlink);
            close(dir);
        }
    }
    /* names that are not names */
    int dir = fresh(0755, 0, 0);
    make(dir, "d", "dir");
    printf("rmdir dot: %s\n", en(res(unlinkat(dir, "d/.", AT_REMOVEDIR))));
    printf("rmdir dotdot: %s\n", en(res(unlinkat(dir, "d/..", AT_REMOVEDIR))));
    printf("mkdir dot: %s\n", en(res(mkdirat(dir, ".", 0755))));
    printf("rename dot: %s\n", en(res(renameat(dir, "d/.", dir, "e"))));
    printf("rename into self: %s\n", en(res(renameat(dir, "d", dir, "d/e"))));
    printf("rename empty: %s\n", en(res(renameat(dir, "", dir, "e"))));
    printf("unlink dir: %s\n", en(res(unlinkat(dir, "d", 0))));
    printf("link dir: %s\n", en(res(linkat(dir, "d", dir, "e", 0))));
    close(dir);
    /* ctime/mtime/nlink of directories moved between directories */
    dir = fresh(0755, 0, 0);
    make(dir, "a", "dir");
    make(dir, "b", "dir");
    make(dir, "a/s", "dir");
    struct stat a0 = st(dir, "a"), b0 = st(dir, "b"), s0 = st(dir, "a/s");
    pause_a_bit();
    int r = res(renameat(dir, "a/s", dir, "b/s"));
    struct stat a1 = st(dir, "a"), b1 = st(dir, "b"), s1 = st(dir, "b/s");
    printf("move dir: %s from nlink %lu->%lu mtime %s, to nlink %lu->%lu mtime %s, moved ctime %s\n",
           en(r), (unsigned long)a0.st_nlink, (unsigned long)a1.st_nlink,
           newer(a1.st_mtim, a0.st_mtim) ? "changed" : "same", (unsigned long)b0.st_nlink,
           (unsigned long)b1.st_nlink, newer(b1.st_mtim, b0.st_mtim) ? "changed" : "same",
           newer(s1.st_ctim, s0.st_ctim) ? "changed" : "same");
    int fdd = openat(dir, "b/s/..", O_RDONLY | O_DIRECTORY);
    struct stat up;
    fstat(fdd, &up);
    printf("moved dir's parent is the new one: %d\n", up.st_ino == b1.st_ino);
    close(fdd);
    close(dir);
    /* umask and mode of new entries; setgid directories pass their group */
    dir = fresh(02777, 0, 1500);
    umask(022);
    as1(1000);
    make(dir, "f", "reg");
    make(dir, "d", "dir");
    make(dir, "p", "fifo");
    make(dir, "l", "symlink");
    make(dir, "s", "sock");
    back();
    umask(0);
    for (int t = 0; t < 5; t++) {
        const char *names[] = {"f", "d", "p", "l", "s"};
        struct stat x = st(dir, names[t]);
        printf("new %s in setgid dir: mode=%o owner=%u:%u\n", types[t], x.st_mode, x.st_uid,
               x.st_gid);
    }
    symlinkat("f", dir, "rl");
    mkfifoat(dir, "rp", 0644);
    struct stat x = st(dir, "rl"), y = st(dir, "rp");
    printf("new symlink by root in setgid dir: owner=%u:%u\n", x.st_uid, x.st_gid);
    printf("new fifo by root in setgid dir: owner=%u:%u\n", y.st_uid, y.st_gid);
    close(dir);
}

/* ---- PATH_MAX: a deep tree worked on with *at calls ---- */
static void deep(void)
{
    char comp[NAME_MAX + 2];
    memset(comp, 'x', NAME_MAX);
    comp[NAME_MAX] = 0;
    int top = fresh(0755, 0, 0);
    int fd = dup(top);
    size_t len = 0;
    int level = 0, r = 0;
    while (len <= 2 * PATH_MAX) {
        r = res(mkdirat(fd, comp, 0755));
        if (r) break;
        int n = openat(fd, comp, O_RDONLY | O_DIRECTORY);
        if (n < 0) { r = errno; break; }
        close(fd);
        fd = n;
        len += NAME_MAX + 1;
        level++;
    }
    printf("deep build: %s levels=%d\n", en(r), level);
    char longname[NAME_MAX + 2];
    memset(longname, 'y', NAME_MAX);
    longname[NAME_MAX] = 0;
    printf("deep mkdir: %s\n", en(res(mkdirat(fd, "d", 0755))));
    printf("deep mkdir NAME_MAX: %s\n", en(res(mkdirat(fd, longname, 0755))));
    printf("deep rmdir NAME_MAX: %s\n", en(res(unlinkat(fd, longname, AT_REMOVEDIR))));
    char toolong[NAME_MAX + 2];
    memset(toolong, 'z', NAME_MAX + 1);
    toolong[NAME_MAX + 1] = 0;
    printf("deep mkdir NAME_MAX+1: %s\n", en(res(mkdirat(fd, toolong, 0755))));
    printf("deep mkfifo: %s\n", en(res(mkfifoat(fd, "p", 0644))));
    printf("deep mknod fifo: %s\n", en(res(mknodat(fd, "q", S_IFIFO | 0644, 0))));
    int f = openat(fd, longname, O_CREAT | O_EXCL | O_RDWR, 0644);
    printf("deep open creat NAME_MAX: %s\n", en(f < 0 ? errno : 0));
    printf("deep write: %s\n", en(f < 0 ? EBADF : res(write(f, "hello", 5))));
    printf("deep ftruncate: %s\n", en(f < 0 ? EBADF : res(ftruncate(f, 100))));
    struct stat s = st(fd, longname);
    printf("deep size %lld\n", (long long)s.st_size);
    if (f >= 0) close(f);
    int here = open(".", O_RDONLY | O_DIRECTORY);
    if (fchdir(fd) < 0) die("fchdir deep");
    printf("deep truncate: %s\n", en(res(truncate(longname, 3))));
    printf("deep size %lld\n", (long long)st(fd, longname).st_size);
    printf("deep open rdonly: %s\n", en((f = open(longname, O_RDONLY)) < 0 ? errno : 0));
    if (f >= 0) close(f);
    if (fchdir(here) < 0) die("fchdir back");
    close(here);
    printf("deep fchmodat: %s\n", en(res(fchmodat(fd, longname, 0600, 0))));
    printf("deep fchownat: %s\n", en(res(fchownat(fd, longname, 1000, 1000, 0))));
    s = st(fd, longname);
    printf("deep attrs: mode=%04o owner=%u:%u\n", s.st_mode & 07777, s.st_uid, s.st_gid);
    printf("deep link: %s\n", en(res(linkat(fd, longname, fd, "l", 0))));
    printf("deep nlink %lu\n", (unsigned long)st(fd, "l").st_nlink);
    printf("deep symlink: %s\n", en(res(symlinkat(longname, fd, "s"))));
    char buf[512];
    ssize_t n = readlinkat(fd, "s", buf, sizeof buf);
    printf("deep readlink: %s %zd\n", en(n < 0 ? errno : 0), n);
    printf("deep rename: %s\n", en(res(renameat(fd, "l", fd, "l2"))));
    printf("deep unlink link: %s\n", en(res(unlinkat(fd, "l2", 0))));
    printf("deep unlink: %s\n", en(res(unlinkat(fd, longname, 0))));
    printf("deep unlink symlink: %s\n", en(res(unlinkat(fd, "s", 0))));
    printf("deep unlink fifo: %s\n", en(res(unlinkat(fd, "p", 0))));
    printf("deep unlink fifo2: %s\n", en(res(unlinkat(fd, "q", 0))));
    printf("deep rmdir: %s\n", en(res(unlinkat(fd, "d", AT_REMOVEDIR))));
    /* as a non-root user too */
    if (fchownat(fd, "", 1000, 1000, AT_EMPTY_PATH) < 0) die("chown deep");
    as1(1000);
    f = openat(fd, "u", O_CREAT | O_EXCL | O_WRONLY, 0644);
    printf("deep user creat: %s\n", en(f < 0 ? errno : 0));
    if (f >= 0) close(f);
    printf("deep user unlink: %s\n", en(res(unlinkat(fd, "u", 0))));
    back();
    int entries = 0;
    {
        int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY);
        printf("deep opendir: %s\n", en(dfd < 0 ? errno : 0));
        if (dfd >= 0) close(dfd);
    }
    (void)entries;
    /* remove the tree, level by level from the top (rename each level up) */
    close(fd);
    int ok = 0;
    for (int i = 0; i < level; i++) {
        /* top/x/x... : move top/x/x to top/t, remove top/x, rename t to x */
        char path[NAME_MAX * 2 + 4];
        snprintf(path, sizeof path, "%s/%s", comp, comp);
        if (i + 1 < level) {
            if (renameat(top, path, top, "t") < 0) break;
            if (unlinkat(top, comp, AT_REMOVEDIR) < 0) break;
            if (renameat(top, "t", top, comp) < 0) break;
        } else if (unlinkat(top, comp, AT_REMOVEDIR) < 0) {
            break;
        }
        ok++;
    }
    printf("deep teardown: %d of %d\n", ok, level);
    close(top);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: matrix DIR CLASSES\n");
        return 2;
    }
    umask(0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    base = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (base < 0) die(argv[1]);
    if (strchr(argv[2], 's')) sticky();
    if (strchr(argv[2], 'o')) open_perms();
    if (strchr(argv[2], 'c')) chown_chmod();
    if (strchr(argv[2], 'l')) links();
    if (strchr(argv[2], 'w')) special_owners();
    if (strchr(argv[2], 'e')) errnos();
    if (strchr(argv[2], 'p')) deep();
    printf("done %d cases\n", ncase);
    return 0;
}
