#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

/* vm_get_stat() takes the stat's name bare from 6.14 on, as a string before. */
#ifdef vm_get_stat
#define PAGES(name) vm_get_stat(vm, name)
#else
#define PAGES(name) vm_get_stat(vm, #name)
#endif

#define CMD_NOP		0
#define CMD_READ	1
#define CMD_WRITE	2
#define CMD_MAP_GPA	3

/* Whether the scenario's guest asks for conversions (KVM_HC_MAP_GPA_RANGE). */
#define HAS_MAP_GPA	@HAS_MAP_GPA@

struct guest_cmd {
	uint64_t op;
	uint64_t gpa;
	uint64_t val;
	uint64_t attrs;
};
