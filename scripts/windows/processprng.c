/* A stand-in bcryptprimitives.dll for Wine 8, which lacks it: Rust >= 1.78 programs import
 * ProcessPrng from it for their random numbers (hash map seeds). This one answers with
 * advapi32's RtlGenRandom (exported as SystemFunction036), which Wine has. Used only by
 * scripts/windows-check.sh inside its own Wine prefix; never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG part = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, part))
            return FALSE;
        data += part;
        length -= part;
    }
    return TRUE;
}
