/**
 * The PV TypeScript kernel "image" and the guest-physical layout the domain
 * builder sets up (the equivalent of an ELF image and Xen's PV boot layout):
 *
 *   gfn 0      kernel image header: names the kernel module to run
 *   gfn 1      start_info
 *   gfn 2      xenstore ring page (struct xenstore_domain_interface)
 *   gfn 3      console ring page (struct xencons_interface)
 *   gfn 4 ...  free RAM (nr_pages - 4 frames)
 *
 * The two special pages follow start_info, in the order libxenguest's x86 PV
 * builder allocates them (alloc_magic_pages_pv: start_info, xenstore,
 * console). start_info's store_mfn and console.domU.mfn name them; our guests
 * are auto-translated, so, as xc_dom does for translated guests, those fields
 * carry the gfn, not an mfn. Dom0 gets no rings (it talks to xenstored in its
 * own kernel and writes its console with console_io): its gfns 2 and 3 are
 * RAM it leaves unused.
 *
 * The vCPU context's entry is the header's guest-physical address and its first
 * argument the start_info's, as x86_64 PV passes start_info in %rsi.
 */
import { bytes, defineLayout, StructView, u32 } from '../layout.ts';
import { MAX_GUEST_CMDLINE, START_INFO, START_INFO_MAGIC } from '../abi/start-info.ts';
import { PAGE_SIZE } from '../types.ts';

export const IMAGE_GFN = 0;
export const START_INFO_GFN = 1;
/** The xenstore ring page (start_info store_mfn). */
export const XENSTORE_GFN = 2;
/** The console ring page (start_info console.domU.mfn). */
export const CONSOLE_GFN = 3;
/** The first gfn of free RAM. */
export const FIRST_FREE_GFN = 4;
/** The smallest PV domain: image, start_info, the two ring pages and one page of RAM. */
export const MIN_PV_PAGES = 5;

export const KERNEL_IMAGE_MAGIC = 'XENTSPV1';

/** Kernel image header, one page. */
export const KERNEL_IMAGE = defineLayout({ name: 'pvts kernel image header', header: 'shared/guest/image.ts', size: PAGE_SIZE }, {
  magic: bytes(0, 8),
  path_len: u32(8),
  flags: u32(12),
  path: bytes(16, PAGE_SIZE - 16),
});

export function encodeKernelImage(path: string): Uint8Array {
  const img = StructView.alloc(KERNEL_IMAGE);
  img.setBytes('magic', new TextEncoder().encode(KERNEL_IMAGE_MAGIC));
  const p = new TextEncoder().encode(path);
  if (p.length === 0 || p.length > KERNEL_IMAGE.fields.path.length) throw new Error(`kernel path must be 1..${KERNEL_IMAGE.fields.path.length} bytes`);
  img.set('path_len', p.length);
  img.setBytes('path', p);
  return img.raw();
}

/** The module path in an image header, or null if the page is not a kernel image. */
export function decodeKernelImage(page: Uint8Array): string | null {
  if (page.length < PAGE_SIZE) return null;
  const img = new StructView(KERNEL_IMAGE, page);
  if (new TextDecoder().decode(img.bytes('magic')) !== KERNEL_IMAGE_MAGIC) return null;
  const n = img.get('path_len');
  if (n === 0 || n > KERNEL_IMAGE.fields.path.length) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(img.bytes('path').subarray(0, n));
  } catch {
    return null;
  }
}

export interface StartInfoParams {
  readonly nrPages: number;
  readonly sharedInfoMaddr: number;
  readonly flags: number;
  readonly cmdline: string;
  /** gfn of the xenstore ring page (auto-translated guests: a gfn, as xc_dom writes it); 0 for none. */
  readonly storeMfn?: number;
  readonly storeEvtchn?: number;
  /** gfn of the console ring page (a gfn, as for storeMfn); 0 for none. */
  readonly consoleMfn?: number;
  readonly consoleEvtchn?: number;
}

export function encodeStartInfo(p: StartInfoParams): Uint8Array {
  const si = StructView.alloc(START_INFO);
  si.setString('magic', START_INFO_MAGIC);
  si.set('nr_pages', p.nrPages);
  si.set('shared_info', p.sharedInfoMaddr);
  si.set('flags', p.flags);
  si.set('store_mfn', p.storeMfn ?? 0);
  si.set('store_evtchn', p.storeEvtchn ?? 0);
  si.set('console_domU_mfn', p.consoleMfn ?? 0);
  si.set('console_domU_evtchn', p.consoleEvtchn ?? 0);
  if (new TextEncoder().encode(p.cmdline).length >= MAX_GUEST_CMDLINE) throw new Error(`cmdline longer than ${MAX_GUEST_CMDLINE - 1} bytes`);
  si.setString('cmd_line', p.cmdline);
  return si.raw();
}

export type StartInfo = StructView<typeof START_INFO.fields>;

export function decodeStartInfo(bytesIn: Uint8Array): StartInfo {
  return new StructView(START_INFO, bytesIn);
}

