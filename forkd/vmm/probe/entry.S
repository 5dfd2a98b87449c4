// CPL0 stub of the probe guest. On PVM hosts every CPL0 instruction is
// emulated (~2000x slower), so this does the minimum: load our own page
// tables (with the U bit, so CPL3 may touch all of guest memory), GDT with
// user segments and a TSS, an IDT for exceptions, then iretq into the CPL3
// payload with IOPL=3 (port I/O from user mode) and IF=0 (the payload polls).
//
// Entered in 64-bit long mode by the VMM with rsi = boot_params.

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define USER_DS (0x18 | 3)
#define USER_CS (0x20 | 3)
#define TSS_SEL 0x28
#define USER_RFLAGS 0x3002 /* IOPL=3, reserved bit 1, IF=0 */

  .section .text.entry, "ax"
  .code64
  .global _start
_start:
  cli
  lea kernel_stack_top(%rip), %rsp
  mov %rsi, %r12

  lea pml4(%rip), %rax
  mov %rax, %cr3

  // TSS descriptor base, split across the 16-byte system descriptor.
  lea tss(%rip), %rax
  lea gdt_tss(%rip), %rdx
  mov %ax, 2(%rdx)
  shr $16, %rax
  mov %al, 4(%rdx)
  mov %ah, 7(%rdx)
  shr $16, %rax
  mov %eax, 8(%rdx)

  lgdt gdt_ptr(%rip)
  mov $KERNEL_DS, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %ax, %ss
  xor %eax, %eax
  mov %ax, %fs
  mov %ax, %gs
  pushq $KERNEL_CS
  lea 1f(%rip), %rax
  push %rax
  lretq
1:
  mov $TSS_SEL, %ax
  ltr %ax

  call probe_idt_setup
  lidt idt_ptr(%rip)

  mov $USER_DS, %ax
  mov %ax, %ds
  mov %ax, %es
  pushq $USER_DS
  lea user_stack_top(%rip), %rax
  push %rax
  pushq $USER_RFLAGS
  pushq $USER_CS
  lea probe_payload_main(%rip), %rax
  push %rax
  mov %r12, %rdi
  iretq

// Exception entry points: normalise the frame to (vector, error code) and
// call the C handler, which reports and ends the VM.
.macro EXC_NOERR vec
exc_\vec:
  pushq $0
  pushq $\vec
  jmp exc_common
.endm
.macro EXC_ERR vec
exc_\vec:
  pushq $\vec
  jmp exc_common
.endm

EXC_NOERR 0
EXC_NOERR 1
EXC_NOERR 2
EXC_NOERR 3
EXC_NOERR 4
EXC_NOERR 5
EXC_NOERR 6
EXC_NOERR 7
EXC_ERR 8
EXC_NOERR 9
EXC_ERR 10
EXC_ERR 11
EXC_ERR 12
EXC_ERR 13
EXC_ERR 14
EXC_NOERR 15
EXC_NOERR 16
EXC_ERR 17
EXC_NOERR 18
EXC_NOERR 19
EXC_NOERR 20
EXC_ERR 21

exc_common:
  mov $KERNEL_DS, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %rsp, %rdi   // -> struct exception_frame
  call probe_exception
2:
  hlt
  jmp 2b

  .section .rodata
  .global probe_exception_stubs
  .balign 8
probe_exception_stubs:
  .quad exc_0, exc_1, exc_2, exc_3, exc_4, exc_5, exc_6, exc_7
  .quad exc_8, exc_9, exc_10, exc_11, exc_12, exc_13, exc_14, exc_15
  .quad exc_16, exc_17, exc_18, exc_19, exc_20, exc_21

  .section .data.pagetables, "aw"
  // Identity map of the low 4 GiB with 2 MiB pages: P | W | U | PS.
  .balign 4096
pml4:
  .quad pdpt + 0x7
  .fill 511, 8, 0
pdpt:
  .quad pd + 0x7
  .quad pd + 0x1000 + 0x7
  .quad pd + 0x2000 + 0x7
  .quad pd + 0x3000 + 0x7
  .fill 508, 8, 0
pd:
  .set i, 0
  .rept 2048
  .quad (i << 21) | 0x87
  .set i, i + 1
  .endr

  .section .data
  .balign 16
gdt:
  .quad 0
  .quad 0x00af9a000000ffff  // 0x08 kernel code, 64-bit
  .quad 0x00cf92000000ffff  // 0x10 kernel data
  .quad 0x00cff2000000ffff  // 0x18 user data, DPL3
  .quad 0x00affa000000ffff  // 0x20 user code, 64-bit, DPL3
gdt_tss:
  .quad 0x0000890000000067  // 0x28 TSS (available), limit 0x67, base patched
  .quad 0
gdt_end:
gdt_ptr:
  .word gdt_end - gdt - 1
  .quad gdt

  .global idt_ptr
idt_ptr:
  .word 256 * 16 - 1
  .quad probe_idt

  .balign 16
tss:
  .long 0
  .quad kernel_stack_top    // rsp0: stack for exceptions taken from CPL3
  .fill 0x66 - 12, 1, 0
  .word 0x68                // no I/O bitmap: IOPL alone governs port I/O

  .section .bss
  .balign 4096
  .global probe_idt
probe_idt:
  .fill 256 * 16, 1, 0
kernel_stack:
  .fill 16384, 1, 0
kernel_stack_top:
user_stack:
  .fill 65536, 1, 0
user_stack_top:
