// AEGIS-128L (RFC 10032) with AES-NI: a measurement of what the cipher would cost per packet,
// against ipsec-mb's AES-128-GCM on the same buffers.
#define _GNU_SOURCE
#include <immintrin.h>
#include <intel-ipsec-mb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef __m128i B;
#define R(a,b) _mm_aesenc_si128(a,b)
static inline void upd(B s[8], B m0, B m1){
  B t=s[7];
  s[7]=R(s[6],s[7]); s[6]=R(s[5],s[6]); s[5]=R(s[4],s[5]); s[4]=R(s[3],_mm_xor_si128(s[4],m1));
  s[3]=R(s[2],s[3]); s[2]=R(s[1],s[2]); s[1]=R(s[0],s[1]); s[0]=R(t,_mm_xor_si128(s[0],m0));
}
static void aegis_seal(const uint8_t k[16], const uint8_t n[16], const uint8_t*ad, size_t adl, const uint8_t*m, size_t ml, uint8_t*c, uint8_t tag[16]){
  static const uint8_t c0b[16]={0x00,0x01,0x01,0x02,0x03,0x05,0x08,0x0d,0x15,0x22,0x37,0x59,0x90,0xe9,0x79,0x62};
  static const uint8_t c1b[16]={0xdb,0x3d,0x18,0x55,0x6d,0xc2,0x2f,0xf1,0x20,0x11,0x31,0x42,0x73,0xb5,0x28,0xdd};
  B K=_mm_loadu_si128((const B*)k), N=_mm_loadu_si128((const B*)n), C0=_mm_loadu_si128((const B*)c0b), C1=_mm_loadu_si128((const B*)c1b);
  B s[8]={_mm_xor_si128(K,N),C1,C0,C1,_mm_xor_si128(K,N),_mm_xor_si128(K,C0),_mm_xor_si128(K,C1),_mm_xor_si128(K,C0)};
  for(int i=0;i<10;i++) upd(s,N,K);
  size_t i=0; uint8_t buf[32];
  for(;i+32<=adl;i+=32) upd(s,_mm_loadu_si128((const B*)(ad+i)),_mm_loadu_si128((const B*)(ad+i+16)));
  if(i<adl){memset(buf,0,32);memcpy(buf,ad+i,adl-i);upd(s,_mm_loadu_si128((B*)buf),_mm_loadu_si128((B*)(buf+16)));}
  for(i=0;i+32<=ml;i+=32){
    B z0=_mm_xor_si128(_mm_xor_si128(s[6],s[1]),_mm_and_si128(s[2],s[3]));
    B z1=_mm_xor_si128(_mm_xor_si128(s[2],s[5]),_mm_and_si128(s[6],s[7]));
    B t0=_mm_loadu_si128((const B*)(m+i)), t1=_mm_loadu_si128((const B*)(m+i+16));
    _mm_storeu_si128((B*)(c+i),_mm_xor_si128(t0,z0)); _mm_storeu_si128((B*)(c+i+16),_mm_xor_si128(t1,z1));
    upd(s,t0,t1);
  }
  if(i<ml){
    memset(buf,0,32);memcpy(buf,m+i,ml-i);
    B z0=_mm_xor_si128(_mm_xor_si128(s[6],s[1]),_mm_and_si128(s[2],s[3]));
    B z1=_mm_xor_si128(_mm_xor_si128(s[2],s[5]),_mm_and_si128(s[6],s[7]));
    B t0=_mm_loadu_si128((B*)buf), t1=_mm_loadu_si128((B*)(buf+16)); uint8_t o[32];
    _mm_storeu_si128((B*)o,_mm_xor_si128(t0,z0)); _mm_storeu_si128((B*)(o+16),_mm_xor_si128(t1,z1));
    memcpy(c+i,o,ml-i); upd(s,t0,t1);
  }
  B t=_mm_xor_si128(s[2],_mm_set_epi64x((long long)(ml*8),(long long)(adl*8)));
  for(int j=0;j<7;j++) upd(s,t,t);
  B g=_mm_xor_si128(_mm_xor_si128(_mm_xor_si128(s[0],s[1]),_mm_xor_si128(s[2],s[3])),_mm_xor_si128(_mm_xor_si128(s[4],s[5]),s[6]));
  _mm_storeu_si128((B*)tag,g);
}
static uint64_t now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
static void hex(const char*l,const uint8_t*p,int n){printf("%s ",l);for(int i=0;i<n;i++)printf("%02x",p[i]);printf("\n");}
int main(void){
  uint8_t k[16]={0x10,0x01}, n[16]={0x10,0x00,0x02}, m[16]={0}, c[16], tag[16];
  aegis_seal(k,n,NULL,0,m,16,c,tag); hex("ct  (want c1c0e58bd913006feba00f4b3cc3594e)",c,16); hex("tag (want abe0ece80c24868a226a35d16bdae37a)",tag,16);
  IMB_MGR*mg=alloc_mb_mgr(0); init_mb_mgr_auto(mg,NULL);
  struct gcm_key_data *key=aligned_alloc(64,sizeof(struct gcm_key_data)); IMB_AES128_GCM_PRE(mg,k,key);
  int sizes[]={64,1424,65536};
  for(int si=0;si<3;si++){ int L=sizes[si]; uint8_t*src=aligned_alloc(64,L+64),*dst=aligned_alloc(64,L+64); memset(src,7,L); uint8_t aad[16]={0xEE},iv[12]={0},nn[16]={0};
    double ta=0,tg=0; int it=L>4096?20000:400000;
    for(int rep=0;rep<6;rep++){
      uint64_t t0=now(); for(int i=0;i<it;i++){nn[0]=i;aegis_seal(k,nn,aad,16,src,L,dst,dst+L);} ta+=now()-t0;
      t0=now(); for(int i=0;i<it;i++){struct gcm_context_data cx; iv[0]=i; IMB_AES128_GCM_ENC(mg,key,&cx,dst,src,L,iv,aad,16,dst+L,16);} tg+=now()-t0;
    }
    printf("%6d B: AEGIS-128L %.1f ns, AES-128-GCM (ipsec-mb) %.1f ns, ratio %.2f\n",L,ta/6/it,tg/6/it,tg/ta);
  }
}
