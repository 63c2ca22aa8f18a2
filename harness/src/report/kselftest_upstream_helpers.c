static uint64_t next_cmd;

static void guest_code(void)
{
	for (;;) {
		struct guest_cmd *c = &cmds[next_cmd];
		uint64_t val = 0;

		if (c->op == CMD_WRITE)
			WRITE_ONCE(*(uint64_t *)c->gpa, c->val);
		else if (c->op == CMD_READ)
			val = READ_ONCE(*(uint64_t *)c->gpa);
		else if (c->op == CMD_MAP_GPA)
			val = kvm_hypercall(KVM_HC_MAP_GPA_RANGE, c->gpa, c->val, c->attrs, 0);
		GUEST_SYNC_ARGS(next_cmd, val, 0, 0, 0);
		next_cmd++;
	}
}

static struct kvm_vm *vm;
static struct kvm_vcpu *vcpu;
static struct kvm_regs entry_regs;
static uint64_t base_4k, base_2m, base_1g;

/* The slots as the test made them, for userspace's half of the guest's conversions. */
struct pm_slot {
	uint32_t id;
	int used, fd;
	uint64_t gpa, size, off;
	uint8_t *hva;
};
static struct pm_slot pm_slots[64];

/*
 * KVM_HC_MAP_GPA_RANGE reached userspace: convert as privmem (and
 * private_mem_conversions_test.c) does, set the attributes, then drop the side
 * the range left (punch guest_memfd going shared, clear the shared memory
 * going private), and answer.
 */
static void map_gpa_exit(void)
{
	uint64_t gpa = vcpu->run->hypercall.args[0], npages = vcpu->run->hypercall.args[1];
	int private = !!(vcpu->run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED);
	struct kvm_memory_attributes attr = {
		.address = gpa,
		.size = npages << 12,
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};
	uint64_t end = gpa + (npages << 12);
	int i;

	if ((npages << 12) >> 12 != npages || end < gpa ||
	    __vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &attr)) {
		vcpu->run->hypercall.ret = -EINVAL;
		return;
	}
	for (i = 0; i < 64; i++) {
		struct pm_slot *sl = &pm_slots[i];
		uint64_t s = gpa > sl->gpa ? gpa : sl->gpa;
		uint64_t e = end < sl->gpa + sl->size ? end : sl->gpa + sl->size;

		if (!sl->used || s >= e)
			continue;
		if (!private && sl->fd >= 0)
			fallocate(sl->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  sl->off + (s - sl->gpa), e - s);
		else if (private && sl->hva)
			memset(sl->hva + (s - sl->gpa), 0, e - s);
	}
	vcpu->run->hypercall.ret = 0;
}

/* Run the guest's command @cmd to its GUEST_SYNC; returns what it read. */
static uint64_t guest_sync(uint64_t cmd)
{
	struct ucall uc;

	for (;;) {
		vcpu_run(vcpu);
		if (!HAS_MAP_GPA || vcpu->run->exit_reason != KVM_EXIT_HYPERCALL)
			break;
		map_gpa_exit();
	}
	TEST_ASSERT_EQ(get_ucall(vcpu, &uc), UCALL_SYNC);
	TEST_ASSERT_EQ(uc.args[1], cmd);
	return uc.args[2];
}

//@guest_memory_fault
/* Command @cmd cannot complete: go on with the next one, from the top of the loop. */
static void guest_skip(uint64_t cmd)
{
	next_cmd = cmd + 1;
	sync_global_to_guest(vm, next_cmd);
	vcpu_regs_set(vcpu, &entry_regs);
}

//@guest_memory_fault
static void guest_memory_fault(uint64_t cmd, uint64_t flags)
{
	int r = _vcpu_run(vcpu);

	TEST_ASSERT(r == -1 && errno == EFAULT,
		    "command %lu: KVM_RUN returned %d (errno %d), not a memory fault",
		    (unsigned long)cmd, r, errno);
	TEST_ASSERT_EQ(vcpu->run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	TEST_ASSERT_EQ(vcpu->run->memory_fault.flags, flags);
	guest_skip(cmd);
}

//@guest_mmio
/* An access that exits as MMIO: a read completes with zero, then the command goes on. */
static void guest_mmio(uint64_t cmd)
{
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(vcpu->run->exit_reason, KVM_EXIT_MMIO);
	memset(vcpu->run->mmio.data, 0, sizeof(vcpu->run->mmio.data));
	guest_sync(cmd);
}

//@pm_slot_set
/* Record slot @id as the test made it (@hva NULL: guest_memfd's own mapping or none). */
static void pm_slot_set(uint32_t id, uint64_t gpa, uint64_t size, void *hva, int fd, uint64_t off)
{
	int i, free = -1;

	for (i = 0; i < 64; i++) {
		if (pm_slots[i].used && pm_slots[i].id == id)
			break;
		if (!pm_slots[i].used && free < 0)
			free = i;
	}
	if (i == 64)
		i = free;
	TEST_ASSERT(i >= 0, "more than 64 slots");
	pm_slots[i] = (struct pm_slot){ .id = id, .used = 1, .fd = fd, .gpa = gpa, .size = size,
					.off = off, .hva = hva };
}

//@pm_slot_del
static void pm_slot_del(uint32_t id)
{
	int i;

	for (i = 0; i < 64; i++)
		if (pm_slots[i].used && pm_slots[i].id == id)
			pm_slots[i].used = 0;
}

//@slot_memory
/* Userspace memory for a slot, as privmem gives it: THP where the host allows, faulted in. */
static void *slot_memory(uint64_t size)
{
	uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t off;

	TEST_ASSERT(p != MAP_FAILED, "mmap(%lu)", (unsigned long)size);
	madvise(p, size, MADV_HUGEPAGE);
	for (off = 0; off < size; off += 0x1000)
		p[off] = 0;
	return p;
}

//@
/* The page counters with the guest's own (library) pages mapped: a NOP command. */
static void warm_baseline(uint64_t cmd)
{
	guest_sync(cmd);
	base_4k = PAGES(pages_4k);
	base_2m = PAGES(pages_2m);
	base_1g = PAGES(pages_1g);
}

#define EXPECT_OK(r, what) \
	TEST_ASSERT((r) == 0, "%s: %d (%s)", what, r, strerror(errno))
#define EXPECT_ERRNO(r, e, what) \
	TEST_ASSERT((r) == -1 && errno == (e), "%s: expected " #e ", got %d (%s)", what, r, strerror(errno))
