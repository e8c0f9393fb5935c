//! The floor of forwarding one packet: SRTP-protecting a 1,200-byte RTP packet with each profile
//! a leg can negotiate, and sending it with a nonblocking `send_to` on loopback, as the node's
//! media worker does. `switchboard_benches::floor` documents which profile is used when.

use criterion::{Criterion, Throughput};
use switchboard_benches::floor::{LoopbackSink, Profile, SrtpProtector};

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    group.throughput(Throughput::Elements(1));
    for profile in Profile::ALL {
        let mut protector = SrtpProtector::new(profile).expect("SRTP context");
        group.bench_function(format!("protect/{}", profile.name()), |b| {
            b.iter(|| protector.protect_next().expect("protect"))
        });
    }

    let sink = LoopbackSink::bind().expect("loopback sockets");
    let mut protector = SrtpProtector::new(Profile::AeadAes128Gcm).expect("SRTP context");
    let datagram = protector.protect_next().expect("protect");
    group.bench_function("send_to", |b| {
        b.iter(|| sink.send(&datagram).expect("send"))
    });

    for profile in Profile::ALL {
        let mut protector = SrtpProtector::new(profile).expect("SRTP context");
        group.bench_function(format!("protect_and_send/{}", profile.name()), |b| {
            b.iter(|| {
                let datagram = protector.protect_next().expect("protect");
                sink.send(&datagram).expect("send")
            })
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, floor);
criterion::criterion_main!(benches);
