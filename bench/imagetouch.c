/* Cost of a program image's read and of the loader's first reads of its pages, by the memory holding it (process CPU
   ms; docs/PERFORMANCE.md, start-up section of 2026-12-02 11:01). Build: gcc -O2 -o imagetouch bench/imagetouch.c
   Run: ./imagetouch MODE EVERY [FILE]  MODE 0: 4 KiB pages populated with MADV_POPULATE_WRITE, read through a 64 KiB
   chunk moved in by process_vm_writev (main's array path); 1: one 2 MiB-aligned MADV_HUGEPAGE range, same read;
   2: the huge-page range read straight into with pread (NativeImage's path). EVERY: read every EVERY-th page after
   the read, as the lazy page fill does for the pages a guest uses. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
static double cpu(){struct timespec t;clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int touchEvery=atoi(argv[2]);
  int fd=open(argc>3?argv[3]:"/bin/busybox",O_RDONLY); if(fd<0){perror("open");return 1;} off_t size=lseek(fd,0,SEEK_END);
  static char chunk[65536]; memset(chunk,1,sizeof chunk);
  double t0=cpu(); char*img;
  size_t hp=2<<20; size_t mapb=(size+hp-1)&~(hp-1);
  if(mode==0){ // 4K populated
    img=mmap(0,size,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
    madvise(img,size&~4095,MADV_POPULATE_WRITE);
  } else {
    char*r=mmap(0,mapb+hp,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
    char*at=(char*)(((size_t)r+hp-1)&~(hp-1));
    if(at>r) munmap(r,at-r);
    if(r+mapb+hp>at+mapb) munmap(at+mapb,(r+mapb+hp)-(at+mapb));
    img=at; madvise(img,mapb,MADV_HUGEPAGE);
  }
  double t1=cpu();
  if(mode==2){ size_t done=0; while(done<size){ssize_t n=pread(fd,img+done,size-done,done); if(n<=0)break; done+=n;} }
  else { size_t done=0; while(done<size){ size_t want=size-done<65536?size-done:65536; ssize_t n=pread(fd,chunk,want,done); if(n<=0)break;
      struct iovec l={chunk,n},rm={img+done,n}; process_vm_writev(getpid(),&l,1,&rm,1,0); done+=n; } }
  double t2=cpu();
  volatile long s=0; char page[4096];
  for(size_t o=0;o+4096<=size;o+=4096*touchEvery){ memcpy(page,img+o,4096); s+=page[7]; }
  double t3=cpu();
  printf("mode %d alloc %.3f read %.3f touch %.3f total %.3f\n",mode,t1-t0,t2-t1,t3-t2,t3-t0);
  return 0;
}
