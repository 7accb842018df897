// Does sealing straight from cold records (streaming GCM) hide the cipher behind the memory
// stalls of the copy it replaces? Compares, per YCSB-E-like scan of 50 random 4 KiB records:
//  copy:       memcpy records (+ 30 B framing each) into a reply buffer          (plaintext path)
//  copy+seal:  that, then seal the reply packet by packet into a TX buffer       (today's encrypted path)
//  direct:     per packet, GCM init/update(pieces from the records)/finalize     (seal replaces the copy)
#define _GNU_SOURCE
#include <intel-ipsec-mb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define NREC 100000
#define RSZ 4096
#define PER 50
#define DPP 1424
static uint64_t now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
static uint64_t rng=88172645463325252ull; static uint64_t rnd(void){rng^=rng<<13;rng^=rng>>7;rng^=rng<<17;return rng;}
int main(int argc,char**argv){
  int iters=argc>1?atoi(argv[1]):4000;
  IMB_MGR*m=alloc_mb_mgr(0); init_mb_mgr_auto(m,NULL);
  struct gcm_key_data *key=aligned_alloc(64,sizeof(struct gcm_key_data)); uint8_t k[16]={1,2,3}; IMB_AES128_GCM_PRE(m,k,key);
  uint8_t *db=aligned_alloc(4096,(size_t)NREC*RSZ); for(size_t i=0;i<(size_t)NREC*RSZ;i+=8)*(uint64_t*)(db+i)=rnd();
  size_t reply=PER*(RSZ+30)+6; int np=(reply+DPP-1)/DPP;
  uint8_t *buf=aligned_alloc(64,reply+64), *tx=aligned_alloc(64,(size_t)np*(DPP+16)+64), *tx2=aligned_alloc(64,(size_t)np*(DPP+16)+64);
  uint8_t iv[12]={0}, aad[16]={0xEE}; uint8_t frame[64]; memset(frame,0x5A,sizeof frame);
  double t[3]={0}; int idx[PER];
  for(int it=0;it<iters;it++){
    int mode=it%3;
    for(int r=0;r<PER;r++) idx[r]=rnd()%NREC;
    uint64_t t0=now();
    if(mode==0||mode==1){
      size_t o=6; memset(buf,0,6);
      for(int r=0;r<PER;r++){memcpy(buf+o,frame,30);o+=30;memcpy(buf+o,db+(size_t)idx[r]*RSZ,RSZ);o+=RSZ;}
      if(mode==1){ for(int p=0;p<np;p++){ size_t off=(size_t)p*DPP, len=reply-off<DPP?reply-off:DPP; struct gcm_context_data c; iv[0]=p;
          IMB_AES128_GCM_ENC(m,key,&c,tx+(size_t)p*(DPP+16),buf+off,len,iv,aad,16,tx+(size_t)p*(DPP+16)+len,16);} }
    } else {
      // pieces: 6 B header, then per record 30 B frame + 4096 B value; stream per packet.
      int r=-1; size_t inpiece=0, piecelen=6; const uint8_t*piece=frame; 
      for(int p=0;p<np;p++){ size_t off=(size_t)p*DPP, len=reply-off<DPP?reply-off:DPP; struct gcm_context_data c; iv[0]=p;
        uint8_t*out=tx2+(size_t)p*(DPP+16); IMB_AES128_GCM_INIT(m,key,&c,iv,aad,16); size_t done=0;
        while(done<len){ size_t n=piecelen-inpiece; if(n>len-done)n=len-done;
          IMB_AES128_GCM_ENC_UPDATE(m,key,&c,out+done,piece+inpiece,n); done+=n; inpiece+=n;
          if(inpiece==piecelen){ inpiece=0; if(piece==frame||r<0){ if(r<0){r=0;piece=frame;piecelen=30;} else {piece=db+(size_t)idx[r]*RSZ;piecelen=RSZ;} } else { r++; piece=frame; piecelen=30; if(r>=PER)break; } }
        }
        IMB_AES128_GCM_ENC_FINALIZE(m,key,&c,out+len,16);
      }
    }
    t[mode]+=now()-t0;
  }
  double n=iters/3.0;
  printf("per scan (%d packets, %zu B): copy %.1f us, copy+seal %.1f us, direct seal %.1f us\n",np,reply,t[0]/n/1e3,t[1]/n/1e3,t[2]/n/1e3);
  return 0;
}
