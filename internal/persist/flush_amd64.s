#include "textflag.h"

// func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// The loops run over [base &^ 63, base+len): rounding the start down covers
// a first line that b only partly holds; stopping below base+len never
// touches the line after b's last byte.

// func flushCLWB(b []byte)
TEXT ·flushCLWB(SB), NOSPLIT, $0-24
	MOVQ b_base+0(FP), AX
	MOVQ b_len+8(FP), BX
	ADDQ AX, BX
	ANDQ $~63, AX
clwbloop:
	CMPQ AX, BX
	JAE  clwbdone
	CLWB (AX)
	ADDQ $64, AX
	JMP  clwbloop
clwbdone:
	SFENCE
	RET

// func flushCLFLUSHOPT(b []byte)
TEXT ·flushCLFLUSHOPT(SB), NOSPLIT, $0-24
	MOVQ b_base+0(FP), AX
	MOVQ b_len+8(FP), BX
	ADDQ AX, BX
	ANDQ $~63, AX
optloop:
	CMPQ AX, BX
	JAE  optdone
	CLFLUSHOPT (AX)
	ADDQ $64, AX
	JMP  optloop
optdone:
	SFENCE
	RET

// func flushCLFLUSH(b []byte)
TEXT ·flushCLFLUSH(SB), NOSPLIT, $0-24
	MOVQ b_base+0(FP), AX
	MOVQ b_len+8(FP), BX
	ADDQ AX, BX
	ANDQ $~63, AX
flushloop:
	CMPQ AX, BX
	JAE  flushdone
	CLFLUSH (AX)
	ADDQ $64, AX
	JMP  flushloop
flushdone:
	SFENCE
	RET
