//go:build amd64 && !purego

// AVX-512 bodies of SiLU16 and ExpShift16 (see vecf32_amd64.go): 16 lanes at a time, the
// same float32 operations in the same order as nn's scalar expfCore (no fused multiply-adds),
// so every lane is bit-identical to the scalar code.

#include "textflag.h"

DATA vconst<>+0(SB)/4, $0x3fb8aa3b // log2e
DATA vconst<>+4(SB)/4, $0x43008000 // h1285
DATA vconst<>+8(SB)/4, $0x3f318000 // c1
DATA vconst<>+12(SB)/4, $0x395e8083 // c2
DATA vconst<>+16(SB)/4, $0x39506967 // p0
DATA vconst<>+20(SB)/4, $0x3ab743ce // p1
DATA vconst<>+24(SB)/4, $0x3c088908 // p2
DATA vconst<>+28(SB)/4, $0x3d2aa9c1 // p3
DATA vconst<>+32(SB)/4, $0x3e2aaaaa // p4
DATA vconst<>+36(SB)/4, $0x3f000000 // p5
DATA vconst<>+40(SB)/4, $0x3f800000 // one
DATA vconst<>+44(SB)/4, $0x42b00000 // hi
DATA vconst<>+48(SB)/4, $0xc2ae0000 // lo
DATA vconst<>+52(SB)/4, $0x00000080 // i128
DATA vconst<>+56(SB)/4, $0x0000007f // i127
DATA vconst<>+60(SB)/4, $0x80000000 // sign
GLOBL vconst<>(SB), RODATA|NOPTR, $64

// LOAD_EXP_CONSTS broadcasts vconst into Z16-Z31, the registers EXP_Z1 reads.
#define LOAD_EXP_CONSTS \
	VBROADCASTSS vconst<>+0(SB), Z16; \
	VBROADCASTSS vconst<>+4(SB), Z17; \
	VBROADCASTSS vconst<>+8(SB), Z18; \
	VBROADCASTSS vconst<>+12(SB), Z19; \
	VBROADCASTSS vconst<>+16(SB), Z20; \
	VBROADCASTSS vconst<>+20(SB), Z21; \
	VBROADCASTSS vconst<>+24(SB), Z22; \
	VBROADCASTSS vconst<>+28(SB), Z23; \
	VBROADCASTSS vconst<>+32(SB), Z24; \
	VBROADCASTSS vconst<>+36(SB), Z25; \
	VBROADCASTSS vconst<>+40(SB), Z26; \
	VBROADCASTSS vconst<>+44(SB), Z27; \
	VBROADCASTSS vconst<>+48(SB), Z28; \
	VBROADCASTSS vconst<>+52(SB), Z29; \
	VBROADCASTSS vconst<>+56(SB), Z30; \
	VBROADCASTSS vconst<>+60(SB), Z31;

// EXP_Z1 sets Z8 = exp(Z1) lane by lane, as expfCore does: x = n*ln2 + r with n the nearest
// integer to x*log2e (trunc(x*log2e + 128.5) - 128: Z3 as integer, Z4 as float), r by the
// two-part ln2 c1 + c2 (Z5), the polynomial p0..p5 in r (Z6), then 2^n built in the exponent bits
// (Z7). Z1 must already be clamped to [lo, hi]; clobbers
// Z2-Z8; reads Z16-Z30 (LOAD_EXP_CONSTS).
#define EXP_Z1 \
	VMULPS Z16, Z1, Z2; \
	VADDPS Z17, Z2, Z2; \
	VCVTTPS2DQ Z2, Z3; \
	VPSUBD Z29, Z3, Z3; \
	VCVTDQ2PS Z3, Z4; \
	VMULPS Z18, Z4, Z5; \
	VSUBPS Z5, Z1, Z5; \
	VMULPS Z19, Z4, Z6; \
	VADDPS Z6, Z5, Z5; \
	VMULPS Z20, Z5, Z6; \
	VADDPS Z21, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z22, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z23, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z24, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z25, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z26, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z26, Z6, Z6; \
	VPADDD Z30, Z3, Z7; \
	VPSLLD $23, Z7, Z7; \
	VMULPS Z7, Z6, Z8;

// func silu16(y, sig, x *float32, n int, sc, sh float32)
TEXT ·silu16(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ sig+8(FP), R8
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	VBROADCASTSS sc+32(FP), Z14
	VBROADCASTSS sh+36(FP), Z15
	LOAD_EXP_CONSTS
	SHRQ $4, CX
	JEQ sdone
sloop:
	VMOVUPS (SI), Z0
	VMULPS Z14, Z0, Z0
	VADDPS Z15, Z0, Z0
	VPXORD Z31, Z0, Z1
	VMINPS Z27, Z1, Z1
	VMAXPS Z28, Z1, Z1
	EXP_Z1
	VADDPS Z26, Z8, Z8
	VDIVPS Z8, Z26, Z9
	VMOVUPS Z9, (R8)
	VMULPS Z9, Z0, Z10
	VMOVUPS Z10, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, R8
	DECQ CX
	JNE sloop
sdone:
	VZEROUPPER
	RET

// func expShift16(row *float32, n int, mx float32)
TEXT ·expShift16(SB), NOSPLIT, $0-20
	MOVQ row+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS mx+16(FP), Z14
	LOAD_EXP_CONSTS
	SHRQ $4, CX
	JEQ edone
eloop:
	VMOVUPS (SI), Z0
	VSUBPS Z14, Z0, Z1
	VMAXPS Z28, Z1, Z1
	EXP_Z1
	VMOVUPS Z8, (SI)
	ADDQ $64, SI
	DECQ CX
	JNE eloop
edone:
	VZEROUPPER
	RET
