#!/usr/bin/env python3
"""The generated C project of the benchmarks (bench/fs.sh, bench/image.sh).

    bench/cproject.py DIR N

writes N units (uNNN.c), common.h, main.c and a Makefile into DIR (which
exists). `make -j2` builds `prog`.
"""
import os
import sys

proj, sources = sys.argv[1], int(sys.argv[2])
with open(os.path.join(proj, "common.h"), "w") as f:
    f.write("#pragma once\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
            "#include <math.h>\n#include <errno.h>\n#include <unistd.h>\n#include <stdint.h>\n"
            "#include <sys/types.h>\n#include <sys/stat.h>\n#include <fcntl.h>\n")
    for i in range(sources):
        f.write(f"int unit{i}(int x);\n")
for i in range(sources):
    with open(os.path.join(proj, f"u{i:03}.c"), "w") as f:
        f.write(f'#include "common.h"\n#include <time.h>\n#include <signal.h>\n\n'
                f"static double helper{i}(double v) {{ return sqrt(fabs(v)) + {i}.0; }}\n\n"
                f"int unit{i}(int x) {{\n"
                f"    char buf[64];\n"
                f"    snprintf(buf, sizeof buf, \"%d-{i}\", x);\n"
                f"    int acc = (int)strlen(buf);\n"
                f"    for (int k = 0; k < x % 7; k++) acc += (int)helper{i}(k * x);\n"
                f"    return acc ^ {i};\n}}\n")
with open(os.path.join(proj, "main.c"), "w") as f:
    f.write('#include "common.h"\n\nint main(void) {\n    long t = 0;\n')
    for i in range(sources):
        f.write(f"    t += unit{i}({i});\n")
    f.write('    printf("%ld\\n", t);\n    return 0;\n}\n')
with open(os.path.join(proj, "Makefile"), "w") as f:
    f.write("SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\nCFLAGS := -O1\n\n"
            "prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS) -lm\n\n"
            "%.o: %.c common.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n"
            "clean:\n\trm -f prog $(OBJS)\n")
