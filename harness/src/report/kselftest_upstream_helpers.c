static uint64_t next_cmd;

static void guest_code(void)
{
	for (;;) {
		struct guest_cmd *c = &cmds[next_cmd];
		uint64_t val = 0;

		if (c->op == CMD_WRITE)
			*(volatile uint64_t *)c->gpa = c->val;
		else if (c->op == CMD_READ)
			val = *(volatile uint64_t *)c->gpa;
		GUEST_SYNC_ARGS(next_cmd, val, 0, 0, 0);
		next_cmd++;
	}
}

static struct kvm_vm *vm;
static struct kvm_vcpu *vcpu;
static struct kvm_regs entry_regs;
static uint64_t base_4k, base_2m, base_1g;

/* Run the guest's command @cmd to its GUEST_SYNC; returns what it read. */
static uint64_t guest_sync(uint64_t cmd)
{
	struct ucall uc;

	vcpu_run(vcpu);
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
